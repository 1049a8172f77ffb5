"""From per-seed, per-user test metrics to the benchmark tables: per model the mean with an
interval over test users and seeds, per model the paired comparison with the baseline (mean
difference, its interval, p-value, Holm, verdict), per-seed, budget and per-split rows.

Statistics in `harness.benchmark.stats` (variance components of users x seeds crossed,
Satterthwaite t; nothing is resampled, so the tables are deterministic and a row does not change
when a model is added to or removed from the comparison, except for the Holm adjustment).

Pure numpy/pandas (no TensorFlow): the report tests build realistic results with it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.benchmark.stats import (
    StatsSettings,
    check_seeds,
    compare,
    holm,
    mean_ci,
    model_intervals,
    verdict,
)

METRIC_COLUMNS = [
    "model",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "n_seeds",
    "n_users",
    "interval",
]
TEST_COLUMNS = [
    "model",
    "baseline",
    "metric",
    "n_users",
    "mean_difference",
    "ci_low",
    "ci_high",
    "se",
    "df",
    "p_value",
    "p_holm",
    "p_equivalence",
    "p_equivalence_holm",
    "significant",
    "verdict",
    "mdd",
    "margin",
    "test",
]
BUDGET_COLUMNS = [
    "model",
    "study",
    "n_trials_budget",
    "finished",
    "complete",
    "pruned",
    "failed",
    "epochs_trained",
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

    @property
    def stochastic(self) -> bool:
        """True unless ``info["deterministic"]``: seeds change the model's result."""
        return not self.info.get("deterministic", False)


def metrics_frame(
    runs: list[ModelRun], stats: StatsSettings | None = None, *, folds: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per (model, metric): the mean over seeds and users, with its interval.

    Per-user metrics get the interval of ``stats.interval`` (default: the variance-components
    t-interval, test users x seeds crossed for stochastic models, users alone otherwise;
    within folds and pooled with ``folds``). Set-level metrics (coverage, one value
    per seed) get a t-interval over seeds for stochastic models and none for deterministic
    ones (one run: there is nothing to resample).
    """
    stats = stats or StatsSettings()
    rows = []
    for run in runs:
        n_seeds = len(next(iter(run.per_user.values()))) if run.per_user else 0
        if stats.interval != "none":
            cis = model_intervals(
                run.per_user, stochastic=run.stochastic, settings=stats, folds=folds
            )
        for metric, values in run.per_user.items():
            values = np.atleast_2d(np.asarray(values, dtype=float))
            if stats.interval != "none":
                ci = cis[metric]
                n_users = ci.n
            else:
                ci = mean_ci(nanmean(values, axis=1), stats.confidence)
                n_users = int(np.isfinite(values).all(axis=0).sum())
                ci = type(ci)(ci.mean, float("nan"), float("nan"), ci.n, ci.confidence)
            rows.append(_metric_row(run.model, metric, ci, n_seeds, n_users, stats.interval))
        for metric, values in run.scalars.items():
            ci = mean_ci(np.asarray(values, dtype=float), stats.confidence)
            if not run.stochastic or stats.interval == "none":
                ci = type(ci)(ci.mean, float("nan"), float("nan"), ci.n, ci.confidence)
            rows.append(_metric_row(run.model, metric, ci, len(values), None, "t_seeds"))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def _metric_row(model, metric, ci, n_seeds, n_users, interval) -> dict[str, Any]:
    return {
        "model": model,
        "metric": metric,
        "mean": ci.mean,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "n_seeds": n_seeds,
        "n_users": n_users,
        "interval": interval,
    }


def tests_frame(
    runs: list[ModelRun],
    *,
    baseline: str,
    metric: str = "ndcg@100",
    stats: StatsSettings | None = None,
    folds: np.ndarray | None = None,
) -> pd.DataFrame:
    """Every model against ``baseline`` on per-user ``metric`` (see ``stats.compare``).

    The family (all models vs the baseline) is Holm-corrected; each row's verdict says
    better / worse / equivalent within the margin / not distinguishable. Empty when the
    baseline is not among the runs.
    """
    stats = stats or StatsSettings()
    by_name = {r.model: r for r in runs}
    if baseline not in by_name:
        return pd.DataFrame(columns=TEST_COLUMNS)
    base = by_name[baseline]
    others = [r for r in runs if r.model != baseline]
    comparisons = [
        compare(
            run.per_user[metric],
            base.per_user[metric],
            model_stochastic=run.stochastic,
            baseline_stochastic=base.stochastic,
            settings=stats,
            n_comparisons=len(others),
            folds=folds,
        )
        for run in others
    ]
    p_holm = holm([c.p_value for c in comparisons])
    p_eq_holm = holm([c.p_equivalence for c in comparisons])  # TOST: same family and level
    rows = []
    for run, c, p, p_eq in zip(others, comparisons, p_holm, p_eq_holm, strict=True):
        rows.append(
            {
                "model": run.model,
                "baseline": baseline,
                "metric": metric,
                "n_users": c.n_users,
                "mean_difference": c.mean_difference,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "se": c.se,
                "df": c.df,
                "p_value": c.p_value,
                "p_holm": p,
                "p_equivalence": c.p_equivalence,
                "p_equivalence_holm": p_eq,
                "significant": bool(p < stats.alpha),
                "verdict": verdict(
                    c,
                    p,
                    margin=stats.margin,
                    alpha=stats.alpha,
                    n_users=c.n_users,
                    p_equivalence_holm=p_eq,
                ),
                "mdd": c.mdd,
                "margin": stats.margin,
                "test": c.test,
            }
        )
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


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
    stats: StatsSettings | None = None,
    folds: np.ndarray | None = None,
) -> dict[str, pd.DataFrame]:
    """The benchmark tables, keyed as ``harness.benchmark.layout.TABLES``.

    Args:
        stats: how intervals and tests are computed; None = defaults at ``confidence``.
        folds: pooled cross-validation folds: each user's (column's) fold; a seed row's
            runs in different folds are different training runs (``harness.benchmark.folds``).
            None = one split.

    Raises:
        StatsConfigError: a stochastic model with fewer than 2 seeds while intervals are on.
    """
    stats = stats or StatsSettings(confidence=confidence)
    if stats.interval != "none":
        for run in runs:
            for values in run.per_user.values():
                check_seeds(values, stochastic=run.stochastic, name=run.model)
                break
    tables = {
        "metrics": metrics_frame(runs, stats, folds=folds),
        "tests": tests_frame(runs, baseline=baseline, metric=test_metric, stats=stats, folds=folds),
        "seeds": seeds_frame(runs),
        "budget": budget_frame(runs),
    }
    return tables
