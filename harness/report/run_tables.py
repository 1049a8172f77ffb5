"""Report tables on how the results were obtained: the sweeps (studies, best epochs, the
optimal beta), the selection and its budget, the seeds, and the test ledger (how often each
configuration met the test users). The tables of the results themselves are
`harness.report.tables`; numbers are formatted with its ``fmt``.
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna
import pandas as pd
from optuna.trial import TrialState

from harness.benchmark.layout import BenchmarkResults
from harness.report.document import Table
from harness.report.figures import best_trial
from harness.report.tables import ci_cell, fmt


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
