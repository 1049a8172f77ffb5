"""Report tables of the results: metrics, tests and verdicts, folds, saved models, published
figures. Every number of the report is formatted with ``fmt``, here, once, so the report shows
exactly the values in ``results/``; the tables on how the results were obtained (studies,
selection, budget, seeds, test ledger) are `harness.report.run_tables`."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from harness.benchmark.layout import BenchmarkResults
from harness.report.document import Table

MAIN_METRICS = ("ndcg@10", "ndcg@20", "ndcg@100", "recall@20", "recall@50")


def fmt(value: object, digits: int = 4) -> str:
    """A number with fixed digits; NaN/None as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def stars(p: float | None, alpha: float = 0.05) -> str:
    """Significance marks of a Holm-adjusted p-value: * < alpha, ** < 0.01, *** < 0.001."""
    if p is None or (isinstance(p, float) and math.isnan(p)) or p >= alpha:
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*"


def ci_cell(row: Mapping[str, float]) -> str:
    """ "mean [low, high]" of one metrics.csv row."""
    return f"{fmt(row['mean'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"


def _metric_cell(metrics: pd.DataFrame, model: str, name: str) -> str:
    hit = metrics[(metrics["model"] == model) & (metrics["metric"] == name)]
    return ci_cell(hit.iloc[0]) if len(hit) else "–"


def interval_text(results: BenchmarkResults) -> str:
    """What the intervals of metrics.csv are, in words (from its `interval` column)."""
    kinds = set(results.metrics.get("interval", pd.Series(["t_seeds"])).dropna())
    seeds = results.info.get("n_seeds", "?")
    users = results.info.get("n_test_users", "?")
    if kinds <= {"t_seeds"}:
        return f"mean [95% t-interval over {seeds} seeds; test-user sampling not included]"
    settings = results.info.get("settings", {})
    conf = float(settings.get("confidence", 0.95))
    if "bootstrap" in kinds:  # results written before the variance-components method
        return (
            f"mean [{conf:.0%} bootstrap interval over the {users} test users and the {seeds} "
            f"training seeds, {settings.get('n_resamples', 2000)} resamples]"
        )
    folds = results.info.get("folds")
    within = f" within each of the {folds} folds (each fold its own runs)" if folds else ""
    return (
        f"mean [{conf:.0%} t-interval: the {users} test users crossed with the {seeds} "
        f"training seeds{within} for stochastic models (variance components, Satterthwaite "
        "df); users alone for deterministic ones]"
    )


def comparison_cell(t: Mapping) -> str:
    """ "+0.0056 [-0.0100, +0.0200] p_Holm=0.58: verdict" of one tests.csv row."""
    return (
        f"{float(t['mean_difference']):+.4f} [{float(t['ci_low']):+.4f}, "
        f"{float(t['ci_high']):+.4f}], p_Holm={fmt(t['p_holm'], 4)} "
        f"{stars(t['p_holm'])}".rstrip()
        + f": {t['verdict']}"
    )


def metrics_table(results: BenchmarkResults, names: Sequence[str] = MAIN_METRICS) -> Table:
    """Models x main test metrics (mean [CI]) with the comparison against the baseline."""
    metrics, tests = results.metrics, results.tests
    baseline = results.info.get("baseline", "mult_vae")
    shown = [m for m in names if m in set(metrics["metric"])]
    test_metric = results.info.get("test_metric", "ndcg@100")
    rows = []
    for model in dict.fromkeys(metrics["model"]):
        cells = [model, *(_metric_cell(metrics, model, name) for name in shown)]
        test = tests[tests["model"] == model] if len(tests) else tests
        if model == baseline:
            cells.append("baseline")
        elif len(test):
            cells.append(comparison_cell(test.iloc[0]))
        else:
            cells.append("–")
        rows.append(cells)
    header = ["model", *shown, f"vs {baseline} ({test_metric}: mean Δ [CI], Holm p)"]
    settings = results.info.get("settings", {})
    return Table(
        header,
        rows,
        caption=(
            f"Test users, {interval_text(results)}. recall@k is Liang's truncated recall "
            "(hits / min(k, n_heldout)); recall_std@k is hits / n_heldout. Δ = model − "
            "baseline on the same users (users x seeds crossed, each model's seeds its own), "
            "with its t-interval; p from the paired t-test of the mean difference (variance "
            "components, Satterthwaite df), Holm-corrected over the models (* p<0.05, ** "
            "p<0.01, *** p<0.001); 'equivalent' when a TOST against "
            f"±{settings.get('margin', 0.01)}, Holm-corrected the same way, rejects a larger "
            "difference."
        ),
    )


def all_metrics_table(results: BenchmarkResults) -> Table:
    """Every metric in metrics.csv: metrics as rows, models as columns."""
    metrics = results.metrics
    models = list(dict.fromkeys(metrics["model"]))
    rows = []
    for name in dict.fromkeys(metrics["metric"]):
        rows.append([name, *(_metric_cell(metrics, model, name) for model in models)])
    return Table(["metric", *models], rows, caption=f"All test metrics ({interval_text(results)})")


def tests_table(results: BenchmarkResults) -> Table:
    """The paired comparisons, one row per model against the baseline."""
    rows = [
        [
            r["model"],
            r["baseline"],
            r["metric"],
            str(int(r["n_users"])),
            f"{float(r['mean_difference']):+.4f}",
            f"[{float(r['ci_low']):+.4f}, {float(r['ci_high']):+.4f}]",
            fmt(r["p_value"]),
            fmt(r["p_holm"]),
            fmt(r["mdd"]),
            str(r["verdict"]),
        ]
        for _, r in results.tests.iterrows()
    ]
    return Table(
        [
            "model",
            "baseline",
            "metric",
            "users",
            "mean Δ",
            "Δ CI",
            "p",
            "p (Holm)",
            "detectable Δ",
            "verdict",
        ],
        rows,
        caption=(
            "Paired comparisons on the same test users; Δ = model − baseline (mean over seeds "
            "and users). CI and p: t with Satterthwaite df from the variance components of "
            "users x seeds crossed (each model's seeds its own), p Holm-corrected over the "
            "models. Detectable Δ: the smallest difference this test finds with 80% power at "
            "Holm's strictest level."
        ),
    )


def folds_table(results: BenchmarkResults) -> Table | None:
    """Per fold of a cross-validated benchmark: each model's test metric on that fold's own
    users, the trial its selection chose, and what the fold cost; None without folds."""
    folds = results.folds
    if folds is None or folds.empty:
        return None
    metric = folds["metric"].iloc[0]
    rows = []
    for fold, part in folds.groupby("fold", sort=True):
        first = part.iloc[0]
        cells = [str(fold), str(int(first["n_users"]))]
        for _, r in part.iterrows():
            trial = r["chosen_trial"]
            chosen = "" if pd.isna(trial) else f" (trial {int(trial)})"
            cells.append(ci_cell(r) + chosen)
        cells += [fmt(first["sweep_seconds"], 0), fmt(first["benchmark_seconds"], 0)]
        rows.append(cells)
    models = list(dict.fromkeys(folds["model"]))
    pooled = results.metrics[results.metrics["metric"] == metric].set_index("model")
    rows.append(
        [
            "pooled",
            str(int(folds.groupby("fold")["n_users"].first().sum())),
            *(ci_cell(pooled.loc[m]) if m in pooled.index else "–" for m in models),
            fmt(float(folds.groupby("fold")["sweep_seconds"].first().sum()), 0),
            fmt(float(folds.groupby("fold")["benchmark_seconds"].first().sum()), 0),
        ]
    )
    return Table(
        ["fold", "test users", *models, "sweep s", "benchmark s"],
        rows,
        caption=(
            f"Test {metric} per cross-validation fold: each fold swept, selected and scored "
            "on its own split (its test users never seen by its sweep or selection); the "
            "pooled row is over every user, each a test user exactly once"
        ),
    )


def saved_models_table(results: BenchmarkResults, report_dir: Path) -> Table | None:
    """Links to the final trained models the benchmark kept (None when it kept none)."""
    rows = []
    for model, info in results.info["models"].items():
        for rel in info.get("saved_models") or []:
            target = os.path.relpath(results.path / rel, report_dir)
            rows.append([model, f"[{rel}]({target})"])
    if not rows:
        return None
    return Table(
        ["model", "file"],
        rows,
        caption="Final trained models, one per seed (load with `harness.models.load_model(path)`)",
    )


def published_table(results: BenchmarkResults, published: Mapping | None) -> Table | None:
    """Published numbers (``report.published``) beside the measured means, per model and
    metric; None when nothing is published for the benchmarked models."""
    if not published or not published.get("models"):
        return None
    measured = results.metrics.set_index(["model", "metric"])
    rows = []
    for model, values in published["models"].items():
        for metric, value in (values or {}).items():
            key = (model, metric)
            here = measured.loc[key] if key in measured.index else None
            rows.append(
                [
                    model,
                    metric,
                    fmt(float(value), 3),
                    "not run" if here is None else ci_cell(here),
                    "–" if here is None else f"{float(here['mean']) - float(value):+.3f}",
                ]
            )
    if not rows:
        return None
    return Table(
        ["model", "metric", "published", "measured [CI]", "measured − published"],
        rows,
        caption=f"Published numbers beside this run's: {published.get('source', 'source not given')}",
    )
