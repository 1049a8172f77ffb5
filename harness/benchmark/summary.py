"""From per-seed, per-user test metrics to the benchmark tables: mean and 95% CI over seeds,
paired Wilcoxon tests against the baseline with Holm correction, per-seed and budget rows.

Pure numpy/pandas (no TensorFlow): the report tests build realistic results with it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.benchmark.stats import holm, mean_ci, paired_wilcoxon

TEST_COLUMNS = [
    "model",
    "baseline",
    "metric",
    "statistic",
    "p_value",
    "p_holm",
    "n_users",
    "median_difference",
    "mean_difference",
    "significant",
]
BUDGET_COLUMNS = [
    "model",
    "study",
    "n_trials_budget",
    "finished",
    "complete",
    "pruned",
    "failed",
    "note",
]


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """``np.nanmean`` without the warning for all-NaN slices (those stay NaN: a user with no
    held-out item has no value, which is expected, not an error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


@dataclass
class ModelRun:
    """Everything the benchmark measured for one model's final configuration.

    Attributes:
        model: model name, e.g. "mult_vae".
        per_user: metric -> array (n_seeds, n_test_users) of per-user test values (NaN where
            a user has no held-out item).
        scalars: metric -> one value per seed for set-level metrics (catalogue coverage).
        seeds: one dict per seed (seed, val_ndcg, best_epoch, optimal_beta, epochs_run,
            wall_seconds), same order as the rows of ``per_user``.
        info: the model's record in benchmark.json (study, budget, candidates, params, beta).
    """

    model: str
    per_user: dict[str, np.ndarray]
    scalars: dict[str, list[float]] = field(default_factory=dict)
    seeds: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def metrics_frame(runs: list[ModelRun], confidence: float = 0.95) -> pd.DataFrame:
    """One row per (model, metric): mean over seeds of the per-seed mean over users, with CI."""
    rows = []
    for run in runs:
        per_seed = {m: nanmean(v, axis=1) for m, v in run.per_user.items()}
        per_seed.update({m: np.asarray(v, dtype=float) for m, v in run.scalars.items()})
        for metric, values in per_seed.items():
            ci = mean_ci(values, confidence)
            rows.append(
                {
                    "model": run.model,
                    "metric": metric,
                    "mean": ci.mean,
                    "ci_low": ci.low,
                    "ci_high": ci.high,
                    "n_seeds": ci.n,
                }
            )
    return pd.DataFrame(rows, columns=["model", "metric", "mean", "ci_low", "ci_high", "n_seeds"])


def tests_frame(
    runs: list[ModelRun], *, baseline: str, metric: str = "ndcg@100", alpha: float = 0.05
) -> pd.DataFrame:
    """Paired Wilcoxon tests of every model against ``baseline`` on per-user ``metric``.

    Each user's value is first averaged over seeds, so a test compares models, not seeds.
    The family (all models vs the baseline) is Holm-corrected. Empty when the baseline is not
    among the runs.
    """
    by_name = {r.model: r for r in runs}
    if baseline not in by_name:
        return pd.DataFrame(columns=TEST_COLUMNS)
    base = nanmean(by_name[baseline].per_user[metric], axis=0)
    rows = []
    for run in runs:
        if run.model == baseline:
            continue
        values = nanmean(run.per_user[metric], axis=0)
        test = paired_wilcoxon(values, base)
        rows.append(
            {
                "model": run.model,
                "baseline": baseline,
                "metric": metric,
                "statistic": test.statistic,
                "p_value": test.p_value,
                "n_users": test.n_pairs,
                "median_difference": test.median_difference,
                "mean_difference": float(nanmean(values - base)),
            }
        )
    frame = pd.DataFrame(
        rows, columns=[c for c in TEST_COLUMNS if c not in ("p_holm", "significant")]
    )
    frame["p_holm"] = holm(frame["p_value"].to_numpy(dtype=float))
    frame["significant"] = frame["p_holm"] < alpha
    return frame[TEST_COLUMNS]


def seeds_frame(runs: list[ModelRun]) -> pd.DataFrame:
    """One row per (model, seed): the seed's facts and its mean test metrics."""
    rows = []
    for run in runs:
        for i, facts in enumerate(run.seeds):
            row = {"model": run.model, **facts}
            row.update({m: float(nanmean(v[i])) for m, v in run.per_user.items()})
            row.update({m: float(v[i]) for m, v in run.scalars.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def budget_frame(runs: list[ModelRun]) -> pd.DataFrame:
    """One row per model: its study and the trials it got (from ``info["budget"]``)."""
    rows = [{"model": r.model, **r.info.get("budget", {})} for r in runs]
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)


def summary_tables(
    runs: list[ModelRun],
    *,
    baseline: str,
    test_metric: str = "ndcg@100",
    confidence: float = 0.95,
) -> dict[str, pd.DataFrame]:
    """All four benchmark tables, keyed as ``harness.benchmark.layout.TABLES``."""
    return {
        "metrics": metrics_frame(runs, confidence),
        "tests": tests_frame(runs, baseline=baseline, metric=test_metric),
        "seeds": seeds_frame(runs),
        "budget": budget_frame(runs),
    }
