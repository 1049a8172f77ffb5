"""User-level cross-validation: pool the per-fold benchmarks into one.

With ``protocol.folds=K`` the users are split into K disjoint test folds (see
``harness.data.protocol``). Every fold runs the whole recipe on its own split, using nothing
of its test users: its own sweep (studies are named by the fold's split fingerprint), its own
selection on its own validation users, Liang's procedure and the final runs, written to
``results/<name>-fold<k>/``. This module pools them into ``results/<name>/``:

- per-user test values are concatenated over the folds (every user is a test user exactly
  once), with each user's fold kept as ``folds`` in ``per_user/<model>.npz``;
- the statistics account for the fold structure: a seed's run in fold k is a different
  training run from the same seed's run in fold j (seeds nested in folds, users nested in
  folds, users x seeds crossed within a fold; ``harness.benchmark.stats``);
- ``folds.csv`` keeps every fold's own numbers and costs, so the pooled verdict can be read
  next to the per-fold ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.benchmark.layout import BenchmarkResults, load_results, write_results
from harness.benchmark.stats import StatsSettings
from harness.benchmark.summary import ModelRun, summary_tables
from harness.outputs import output_dir

FOLD_COLUMNS = [
    "fold",
    "model",
    "split_fingerprint",
    "n_users",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "chosen_trial",
    "benchmark_seconds",
    "sweep_seconds",
]


def fold_name(name: str, fold: int) -> str:
    """The results folder of one fold's benchmark: ``<name>-fold<k>``."""
    return f"{name}-fold{fold}"


def _runs(results: BenchmarkResults) -> list[ModelRun]:
    runs = []
    for model, info in results.info["models"].items():
        arrays = results.per_user(model)
        arrays.pop("folds", None)
        users = arrays.pop("test_users")
        rows = results.seeds[results.seeds["model"] == model]
        scalars = {c: rows[c].tolist() for c in rows.columns if c.startswith("coverage@")}
        runs.append(ModelRun(model, arrays, scalars, [], {**info, "test_users": users}))
    return runs


def pool_folds(
    results_dir: Path,
    name: str,
    folds: int,
    *,
    stats: StatsSettings,
    baseline: str,
    test_metric: str,
    sweep_seconds: Sequence[float] | None = None,
) -> Path:
    """Pool ``results/<name>-fold<k>/`` for k < ``folds`` into ``results/<name>/``.

    Args:
        results_dir: parent of the benchmark folders.
        name: the pooled benchmark's name (``benchmark.name``).
        folds: K.
        stats: how intervals and tests are computed.
        baseline, test_metric: as in the benchmark settings.
        sweep_seconds: wall time of each fold's sweep stage (the report shows the cost per
            fold); None = unknown.

    Returns:
        The pooled folder.

    Raises:
        MissingInputError: a fold's benchmark is missing (run it first).
        ValueError: the folds disagree on the models or the number of seeds.
    """
    per_fold = [
        load_results(results_dir / fold_name(name, k), hint=f"harness-benchmark protocol.fold={k}")
        for k in range(folds)
    ]
    fold_runs = [_runs(r) for r in per_fold]
    models = [r.model for r in fold_runs[0]]
    if any([r.model for r in runs] != models for runs in fold_runs):
        raise ValueError(
            f"the folds of {name} compared different models: rerun every fold with the same "
            "`models` (harness-run protocol.folds=...)"
        )
    pooled: list[ModelRun] = []
    fold_ids: np.ndarray | None = None
    for i, model in enumerate(models):
        runs = [fr[i] for fr in fold_runs]
        shapes = {next(iter(r.per_user.values())).shape[0] for r in runs}
        if len(shapes) != 1:
            raise ValueError(
                f"{model} has a different number of seed runs per fold ({sorted(shapes)}): "
                "rerun the folds with one benchmark.n_seeds"
            )
        per_user = {
            m: np.concatenate([r.per_user[m] for r in runs], axis=1) for m in runs[0].per_user
        }
        ids = np.concatenate(
            [np.full(next(iter(r.per_user.values())).shape[1], k) for k, r in enumerate(runs)]
        )
        fold_ids = ids if fold_ids is None else fold_ids
        scalars = {m: [v for r in runs for v in r.scalars.get(m, [])] for m in runs[0].scalars}
        info = {
            **{k: v for k, v in runs[0].info.items() if k != "test_users"},
            "per_fold": [{k: v for k, v in r.info.items() if k != "test_users"} for r in runs],
            "budget": _pooled_budget([r.info.get("budget", {}) for r in runs]),
        }
        run = ModelRun(model, per_user, scalars, [], info)  # seeds: per fold, below
        run.info["test_users"] = np.concatenate([r.info["test_users"] for r in runs])
        pooled.append(run)
    assert fold_ids is not None
    tables = summary_tables(
        pooled, baseline=baseline, test_metric=test_metric, stats=stats, folds=fold_ids
    )
    tables["seeds"] = pd.concat(
        [r.seeds.assign(fold=k) for k, r in enumerate(per_fold)], ignore_index=True
    )  # one row per (fold, model, seed): each fold's runs are its own
    tables["folds"] = folds_frame(per_fold, test_metric, sweep_seconds)
    first = per_fold[0].info
    info: dict[str, Any] = {
        **{k: v for k, v in first.items() if k not in ("models", "fold", "wall_seconds")},
        "name": name,
        "folds": folds,
        "fold_benchmarks": [fold_name(name, k) for k in range(folds)],
        "fold_fingerprints": [r.info["split_fingerprint"] for r in per_fold],
        "n_test_users": int(fold_ids.size),
        "test_scorings": _merge_counts([r.info.get("test_scorings", {}) for r in per_fold]),
        "test_scored_once": all(r.info.get("test_scored_once", True) for r in per_fold),
        "test_ledger": {f"fold {k}": r.info.get("test_ledger") for k, r in enumerate(per_fold)},
        "test_exposure": _sum_exposure([r.info.get("test_exposure") for r in per_fold]),
        "models": {r.model: {k: v for k, v in r.info.items() if k != "test_users"} for r in pooled},
        "wall_seconds": round(sum(float(r.info.get("wall_seconds", 0.0)) for r in per_fold), 1),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    per_user = {
        r.model: {**r.per_user, "test_users": r.info["test_users"], "folds": fold_ids}
        for r in pooled
    }
    target = output_dir(results_dir, name, "benchmark.name")
    return write_results(target, info, tables, per_user)


def folds_frame(
    per_fold: Sequence[BenchmarkResults], metric: str, sweep_seconds: Sequence[float] | None
) -> pd.DataFrame:
    """One row per (fold, model): the fold's own test mean and interval, its chosen trial
    and what the fold cost."""
    rows = []
    for k, res in enumerate(per_fold):
        m = res.metrics[res.metrics["metric"] == metric].set_index("model")
        for model, info in res.info["models"].items():
            row = m.loc[model] if model in m.index else None
            rows.append(
                {
                    "fold": k,
                    "model": model,
                    "split_fingerprint": res.info["split_fingerprint"],
                    "n_users": res.info.get("n_test_users"),
                    "metric": metric,
                    "mean": None if row is None else row["mean"],
                    "ci_low": None if row is None else row["ci_low"],
                    "ci_high": None if row is None else row["ci_high"],
                    "chosen_trial": info.get("chosen_trial"),
                    "benchmark_seconds": res.info.get("wall_seconds"),
                    "sweep_seconds": None if sweep_seconds is None else sweep_seconds[k],
                }
            )
    return pd.DataFrame(rows, columns=FOLD_COLUMNS)


def _pooled_budget(budgets: list[dict[str, Any]]) -> dict[str, Any]:
    """One budget row over the folds: trials and epochs summed, the study of each fold."""
    if not budgets:
        return {}
    out = dict(budgets[0])
    for key in ("n_trials_budget", "finished", "complete", "pruned", "failed", "epochs_trained"):
        values = [b.get(key) for b in budgets]
        if all(isinstance(v, int | float) for v in values):
            out[key] = sum(values)
    studies = [str(b.get("study") or "") for b in budgets]
    out["study"] = f"{len(budgets)} folds: " + ", ".join(studies) if any(studies) else ""
    return out


def _merge_counts(records: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for record in records:
        for model, variants in record.items():
            for variant, n in variants.items():
                out.setdefault(model, {}).setdefault(variant, 0)
                out[model][variant] += n
    return out


def _sum_exposure(items: list[dict[str, int] | None]) -> dict[str, int] | None:
    items = [i for i in items if i]
    if not items:
        return None
    return {k: sum(i.get(k, 0) for i in items) for k in items[0]}
