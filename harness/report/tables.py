"""Report tables built from the benchmark files and the studies. Every number is formatted
here, once, with ``fmt`` so the report shows exactly the values in ``results/``."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from harness.benchmark.layout import BenchmarkResults
from harness.report.document import Table
from harness.report.figures import best_trial

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


def best_epochs(results: BenchmarkResults, studies: Mapping[str, optuna.Study]) -> pd.DataFrame:
    """Per model: where the best validation epoch fell, relative to the maximum epochs,
    over the sweep's finished trials and the benchmark's final runs."""
    rows = []
    for model, study in studies.items():
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            best = t.user_attrs.get("best_epoch")
            n = (t.user_attrs.get("params_full") or {}).get("n_epochs")
            if best is not None and n:
                rows.append({"model": model, "source": "sweep", "best": best + 1, "max": n})
    if results is not None and "best_epoch" in results.seeds:
        for _, r in results.seeds.iterrows():
            n = (results.info["models"].get(r["model"], {}).get("params") or {}).get("n_epochs")
            if n and pd.notna(r.get("best_epoch")):
                best = int(r["best_epoch"]) + 1
                rows.append({"model": r["model"], "source": "final", "best": best, "max": n})
    return pd.DataFrame(rows, columns=["model", "source", "best", "max"])


LATE_SHARE = 0.2  # warn when more than this share of best epochs ...
LATE_ZONE = 0.1  # ... falls in the last 10% of the maximum epochs


def best_epoch_table(frame: pd.DataFrame) -> tuple[Table | None, list[str]]:
    """The distribution of best epochs per model and source, and a warning per model whose
    runs were cut short (more than 20% of best epochs in the last 10% of the maximum)."""
    if frame.empty:
        return None, []
    rows, warnings = [], []
    for (model, source), part in frame.groupby(["model", "source"], sort=False):
        late = (part["best"] > (1 - LATE_ZONE) * part["max"]).mean()
        q = part["best"].quantile([0.0, 0.25, 0.5, 0.75, 1.0]).round().astype(int).tolist()
        rows.append(
            [
                model,
                source,
                str(len(part)),
                f"{q[0]} / {q[1]} / {q[2]} / {q[3]} / {q[4]}",
                str(int(part["max"].max())),
                f"{late:.0%}",
            ]
        )
        if late > LATE_SHARE:
            warnings.append(
                f"**Warning**: {late:.0%} of {model}'s {source} runs had their best epoch in "
                f"the last {LATE_ZONE:.0%} of the maximum {int(part['max'].max())} epochs: "
                "training was likely cut short; raise the maximum (budget.n_epochs, or "
                f"models.{model}.n_epochs)."
            )
    table = Table(
        ["model", "runs", "n", "best epoch: min / q1 / median / q3 / max", "max epochs", "late"],
        rows,
        caption=(
            "Best validation epoch (counted from 1) of the sweep's complete trials and the "
            "benchmark's final runs; early stopping (model.patience) ends a run after its "
            f"best epoch; 'late' = share in the last {LATE_ZONE:.0%} of the maximum"
        ),
    )
    return table, warnings


def ledger_table(results: BenchmarkResults) -> Table | None:
    """How many times each configuration met the test users (the persistent test ledger)."""
    ledger = results.info.get("test_ledger")
    if not ledger:
        return None
    per_fold = {k: v for k, v in ledger.items() if k.startswith("fold ")}
    groups = per_fold if per_fold and len(per_fold) == len(ledger) else {"": ledger}
    rows = []
    for fold, models in groups.items():
        for model, variants in (models or {}).items():
            for variant, r in variants.items():
                configs = r.get("configs") or {}
                if r.get("config_hash"):
                    config = r["config_hash"][:12]
                elif configs:
                    config = "; ".join(f"seed {s}: {h[:8]}" for s, h in configs.items())
                else:
                    config = ""
                why = "; ".join(f"seed {s}: {w}" for s, w in (r.get("rescored") or {}).items())
                rows.append(
                    [
                        *([fold] if fold else []),
                        model,
                        variant,
                        str(r["scored"]),
                        str(r["reused"]),
                        str(r["met_test_users"]),
                        config,
                        why,
                    ]
                )
    exposure = results.info.get("test_exposure") or {}
    seen = (
        f" Over all runs, {exposure['configurations']} distinct configurations in "
        f"{exposure['scorings']} scorings have met {'these folds' if per_fold else 'this split'}'s "
        "test users."
        if exposure
        else ""
    )
    header = ["model", "variant", "scored now", "reused", "met test users (all runs)", "config"]
    return Table(
        [*(["fold"] if per_fold else []), *header, "scored again because"],
        rows,
        caption=(
            "Test ledger (results/test_ledger.jsonl): scorings of the test users by this run, "
            "stored scores reused instead of scoring again (only when the model code and "
            "package versions are unchanged; benchmark.rescore=true scores again), and the "
            "scorings of this configuration on this split over all runs." + seen
        ),
    )


def budget_table(results: BenchmarkResults) -> Table:
    """The trial budget each model got and the finished trials in its study."""
    b = results.budget
    rows = [
        [
            r["model"],
            str(r["study"]),
            str(r["n_trials_budget"]),
            str(r["finished"]),
            str(r["complete"]),
            str(r["pruned"]),
            str(r["failed"]),
            str(r.get("epochs_trained", "")),
            str(r["note"]),
        ]
        for _, r in b.astype(object).where(b.notna(), "").iterrows()  # "" for missing cells
    ]
    tuned = b[b["n_trials_budget"] > 0]
    equal = tuned["n_trials_budget"].nunique() <= 1 and tuned["finished"].nunique() <= 1
    failed = int(pd.to_numeric(b["failed"], errors="coerce").fillna(0).sum())
    return Table(
        ["model", "study", "budget", "finished", "complete", "pruned", "failed", "epochs", "note"],
        rows,
        caption="Tuning budget (finished = complete + pruned, what sweep.n_trials counts; "
        "failed trials are extra and capped by sweep.max_failed_trials; epochs = epochs "
        "actually trained over all trials, after pruning and early stopping): "
        + ("equal for every tuned model" if equal else "NOT equal across models")
        + (f"; {failed} failed trial(s)." if failed else "."),
    )


def beta_table(results: BenchmarkResults) -> Table:
    """The optimal beta two ways: Liang's procedure and the search's choice."""
    metric = results.info.get("test_metric", "ndcg@100")
    rows = []
    for model, info in results.info["models"].items():
        beta = info.get("beta") or {}
        search, liang = beta.get("search"), beta.get("liang")
        if not (search or liang):
            continue
        row = [model]
        if search:
            row += [f"{search['param']} = {fmt(search['value'], 3)}", fmt(search["test_mean"])]
        else:
            row += ["–", "–"]
        if liang:
            row += [
                fmt(liang["optimal_beta_mean"], 3),
                ", ".join(fmt(b, 3) for b in liang["optimal_beta"]),
                ci_cell(liang["test"]),
            ]
        else:
            row += ["–", "–", "–"]
        rows.append(row)
    header = [
        "model",
        "(b) search chose",
        f"test {metric}",
        "(a) Liang optimal β (mean)",
        "per seed",
        f"test {metric} at cap = optimal β",
    ]
    return Table(
        header,
        rows,
        caption=(
            "Optimal β two ways: (b) the β / anneal_cap of the configuration the search and "
            "seed-aware selection chose, retrained over seeds; (a) Liang et al.: anneal to cap 1.0, "
            "take β at the best validation epoch, retrain with it as cap at the same slope."
        ),
    )


def selection_table(results: BenchmarkResults) -> Table:
    """Seed-aware selection: the candidates per model and their mean validation NDCG."""
    rows = []
    for model, info in results.info["models"].items():
        for c in info.get("candidates", []):
            chosen = "chosen" if c["trial"] == info.get("chosen_trial") else ""
            rows.append(
                [
                    model,
                    "fixed config" if c["trial"] is None else str(c["trial"]),
                    fmt(c.get("search_value")),
                    fmt(c.get("val_ndcg_mean")),
                    c.get("lr_schedule") or "–",
                    chosen,
                ]
            )
    return Table(
        ["model", "trial", "search value (1 seed)", "mean val NDCG over seeds", "lr schedule", ""],
        rows,
        caption="Seed-aware selection of the final configuration",
    )


def study_table(studies: Mapping[str, optuna.Study]) -> Table:
    """Per study: trials by state and the best trial so far (works while a study runs)."""
    rows = []
    for model, study in studies.items():
        trials = study.get_trials(deepcopy=False)
        count = {s: sum(t.state == s for t in trials) for s in TrialState}
        best = best_trial(study)
        rows.append(
            [
                model,
                study.study_name,
                str(len(trials)),
                str(count[TrialState.COMPLETE]),
                str(count[TrialState.PRUNED]),
                str(count[TrialState.FAIL]),
                str(count[TrialState.RUNNING]),
                fmt(best.value) if best else "–",
                str(best.number) if best else "–",
            ]
        )
    return Table(
        [
            "model",
            "study",
            "trials",
            "complete",
            "pruned",
            "failed",
            "running",
            "best val NDCG",
            "best trial",
        ],
        rows,
        caption="Sweeps",
    )


def seeds_table(results: BenchmarkResults) -> Table:
    """One row per (model, seed): validation NDCG, best epoch, beta and the test metric."""
    metric = results.info.get("test_metric", "ndcg@100")
    rows = [
        [
            r["model"],
            str(r["seed"]),
            fmt(r.get("val_ndcg")),
            str(int(r["best_epoch"]) + 1),  # shown counted from 1, as in the figures
            fmt(r.get("epochs_run")),
            fmt(r.get("optimal_beta"), 3),
            fmt(r.get(metric)),
            fmt(r.get("wall_seconds"), 1),
        ]
        for _, r in results.seeds.iterrows()
    ]
    header = [
        "model",
        "seed",
        "val NDCG",
        "best epoch",
        "epochs run",
        "β at best epoch",
        f"test {metric}",
        "train s",
    ]
    return Table(header, rows, caption="Final runs per seed (closed-form models: one run)")


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
