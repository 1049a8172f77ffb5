"""Assemble the report: figures into ``figures/``, then report.md, report.html and
manifest.json, all written to a temp folder that is renamed to ``reports/<name>`` at the end."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib.figure import Figure
from optuna.trial import TrialState

from harness.benchmark.layout import BenchmarkResults
from harness.outputs import replace_folder
from harness.report import figures as F
from harness.report import run_tables as R
from harness.report import tables as T
from harness.report.document import FIGURES_DIR, Document, FigureRef, Section, to_html, to_markdown
from harness.report.manifest import manifest_section
from harness.report.verdicts import comparisons_frame, summary_markdown

FIGURE_METRICS = ("ndcg@10", "ndcg@100", "recall@20", "recall@50")  # Liang's headline metrics


def _anneal_run(
    model: str, study: optuna.Study | None, results: BenchmarkResults | None
) -> F.AnnealRun | None:
    """Liang's cap-1.0 run from the benchmark if there is one, else the best annealing trial."""
    record = results.info["models"].get(model, {}) if results else {}
    liang = (record.get("beta") or {}).get("liang")
    if liang and liang.get("history", {}).get("beta"):
        histories = [h for h in liang.get("histories") or [liang["history"]] if h.get("ndcg")]
        n = min(len(h["ndcg"]) for h in histories)
        seeds = np.array([np.array(h["ndcg"][:n], dtype=float) for h in histories])
        return F.AnnealRun(
            np.array(histories[0]["beta"][:n], dtype=float),
            np.nanmean(seeds, axis=0),
            f"Liang procedure: anneal to cap 1.0, {len(histories)} seed(s)",
            ndcg_seeds=seeds,
        )
    trials = [
        t
        for t in (study.get_trials(deepcopy=False) if study else [])
        if (bp := F.beta_param(t))
        and bp[0] == "anneal_cap"
        and np.isfinite(F.attr_curve(t, "ndcg_per_epoch")).any()
        and F.attr_curve(t, "beta_per_epoch").size
    ]
    if not trials:
        return None
    t = max(trials, key=F.trial_score)
    return F.AnnealRun(
        F.attr_curve(t, "beta_per_epoch"),
        F.attr_curve(t, "ndcg_per_epoch"),
        f"best annealing trial {t.number} (anneal_cap {F.beta_param(t)[1]:.3f})",
    )


def _chosen_trials(results: BenchmarkResults | None) -> dict[str, int | None]:
    """Model -> the trial whose configuration the benchmark retrained (its record)."""
    if results is None:
        return {}
    return {m: r.get("chosen_trial") for m, r in results.info.get("models", {}).items()}


def _scorings(info: dict[str, Any]) -> str:
    """The benchmark's record of test scorings as text, e.g. "mult_vae: final 5, liang 3"."""
    if info.get("test_ledger"):
        ledgers = info["test_ledger"]
        if all(k.startswith("fold ") for k in ledgers):  # pooled folds: one ledger per fold
            ledgers = {f"{f}/{m}": v for f, ms in ledgers.items() for m, v in (ms or {}).items()}
        rows = [r for variants in ledgers.values() for r in variants.values()]
        return (
            f"{sum(r['scored'] for r in rows)} in this run, "
            f"{sum(r['reused'] for r in rows)} reused from the test ledger (see its table)"
        )
    return "; ".join(
        f"{model}: " + ", ".join(f"{variant} {n}" for variant, n in variants.items())
        for model, variants in info["test_scorings"].items()
    )


class _Writer:
    """Collects sections while saving figures into the report's temp folder."""

    def __init__(self, folder: Path) -> None:
        self.figures = folder / FIGURES_DIR
        self.saved: list[str] = []

    def figure(self, fig: Figure, stem: str, caption: str) -> FigureRef:
        """Save ``fig`` as PNG and SVG and return the reference to place in a section."""
        F.save_figure(fig, self.figures, stem)
        self.saved.append(stem)
        return FigureRef(stem, caption)


def _findings(results: BenchmarkResults) -> Section:
    """The report's first section: its conclusions, generated from the verdicts."""
    return Section("Findings", [summary_markdown(results)])


def _benchmark_sections(
    w: _Writer, results: BenchmarkResults, report_dir: Path | None = None
) -> list[Section]:
    info = results.info
    names = [m for m in FIGURE_METRICS if m in set(results.metrics["metric"])]
    if info.get("fold_fingerprints"):
        where = (
            f"{info['folds']}-fold user-level cross-validation (splits "
            f"{', '.join(f[:8] for f in info['fold_fingerprints'])}), {info['n_test_users']} "
            "test users pooled, each a test user exactly once"
        )
    else:
        where = f"split `{info['split_fingerprint'][:12]}`, {info['n_test_users']} test users"
    summary = Section(
        "Test results",
        [
            f"Benchmark `{info['name']}` on `{info['dataset']}` ({where}). Each model's final "
            "configuration was chosen on validation users only, over the selection seeds "
            f"{info['seeds']}; it was then retrained once per fresh test seed "
            f"{info.get('test_seeds', info['seeds'])} (disjoint from the selection seeds, so "
            "selection's seed luck does not reach the test numbers) with the best validation "
            "epoch's weights kept, and each run scored the test users once (closed-form "
            "models are trained once: seeds change nothing). Test scorings: "
            f"{_scorings(info)}.",
            T.metrics_table(results),
            *[t for t in (T.folds_table(results), R.ledger_table(results)) if t is not None],
            w.figure(
                F.test_metrics_figure(results.metrics, names),
                "test_metrics",
                f"Test metrics: {T.interval_text(results)}",
            ),
            T.tests_table(results),
        ],
    )
    saved = T.saved_models_table(results, report_dir) if report_dir is not None else None
    return [
        summary,
        Section(
            "Tuning budget, selection and seeds",
            [R.budget_table(results), R.selection_table(results), R.seeds_table(results)]
            + ([saved] if saved is not None else []),
        ),
    ]


def _beta_section(
    w: _Writer, studies: Mapping[str, optuna.Study], results: BenchmarkResults | None, k: int
) -> Section:
    section = Section("The optimal β")
    vaes = {
        m: s
        for m, s in studies.items()
        if any(F.beta_param(t) for t in s.get_trials(deepcopy=False))
    }
    runs = {m: r for m in (vaes or studies) if (r := _anneal_run(m, studies.get(m), results))}
    if runs:
        section.blocks.append(
            w.figure(
                F.beta_figure(runs, k=k),
                "beta_per_epoch",
                "Validation NDCG against β along the annealing ramp (mean over seeds, band: "
                "lowest to highest seed); the star marks the optimal β",
            )
        )
        for model, run in runs.items():
            if run.at_ramp_end:
                section.blocks.append(
                    f"**Warning ({model}):** the optimal β {run.optimal_beta:.3f} sits at the end "
                    f"of the annealing ramp (β stops growing there, epoch {run.best_epoch + 1}): "
                    "a larger β might be better still. Anneal to a higher cap or for more "
                    "epochs before trusting it."
                )
    else:
        section.blocks.append("No annealing run recorded: no β-per-epoch figure.")
    if vaes:
        section.blocks.append(
            w.figure(
                F.ndcg_vs_beta_figure(vaes, k=k),
                "ndcg_vs_beta",
                "Validation NDCG against β (constant) or anneal_cap (annealing) across all trials",
            )
        )
    if results is not None:
        section.blocks.append(R.beta_table(results))
    return section


def _optuna_section(w: _Writer, studies: Mapping[str, optuna.Study]) -> Section:
    section = Section("Optimisation history and parameter importances")
    for model, study in studies.items():
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            section.blocks.append(f"{model}: no complete trial yet, no history plot.")
            continue
        section.blocks.append(
            w.figure(
                F.optimization_history_figure(study, f"Optimisation history: {model}"),
                f"history_{model}",
                f"Optimisation history: {model}",
            )
        )
        imp = F.importances_figure(study, f"Parameter importances: {model}")
        if isinstance(imp, str):
            section.blocks.append(f"{model}: parameter importances skipped ({imp}).")
        else:
            section.blocks.append(
                w.figure(imp, f"importance_{model}", f"Parameter importances (fANOVA): {model}")
            )
    return section


def build_report(
    *,
    name: str,
    studies: Mapping[str, optuna.Study],
    results: BenchmarkResults | None,
    manifest: dict[str, Any],
    reports_dir: Path,
    k: int = 100,
    published: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``reports_dir/<name>/`` (report.md, report.html, manifest.json, figures/).

    ``published`` (``report.published``): published numbers shown beside the measured ones.

    Works with studies that hold pruned, failed or running trials; without benchmark results
    (``results=None``) the test sections are replaced by a note. Nothing partial is left in
    ``reports_dir``: the folder appears complete or not at all.

    Args:
        name: report name (folder name).
        studies: model name -> its Optuna study, in display order.
        results: the loaded benchmark, or None.
        manifest: from ``collect_manifest``; "report" wall time is added here.
        reports_dir: parent folder, e.g. ``reports/``.
        k: the cutoff of the validation NDCG the sweeps optimised.

    Returns:
        The report folder.
    """
    start = time.perf_counter()
    manifest = {**manifest, "stage_seconds": dict(manifest.get("stage_seconds", {}))}

    def fill(folder: Path) -> None:
        w = _Writer(folder)
        doc = Document(f"vae-sweep report: {name}")
        if results is not None:
            doc.sections.append(_findings(results))
            doc.sections += _benchmark_sections(w, results, reports_dir / name)
            reference = T.published_table(results, published)
            if reference is not None:
                doc.sections.append(Section("Published references", [reference]))
            comparisons_frame(results).to_csv(folder / "comparisons.csv", index=False)
            for table in ("metrics", "tests", "seeds", "budget", "folds"):
                frame = getattr(results, table)
                if frame is not None:
                    frame.to_csv(folder / f"{table}.csv", index=False)
            (folder / "summary.md").write_text(summary_markdown(results))
        else:
            doc.sections.append(
                Section(
                    "Test results",
                    [
                        "No benchmark results yet: run `harness-benchmark` (or `harness-run`) for the "
                        "test-user table; below are the sweeps only."
                    ],
                )
            )
        doc.sections.append(
            Section(
                "Sweeps",
                [
                    R.study_table(studies),
                    w.figure(
                        F.ndcg_per_epoch_figure(studies, k=k, chosen=_chosen_trials(results)),
                        "ndcg_per_epoch",
                        f"Validation NDCG@{k} per epoch: every trial faint; bold, the "
                        "configuration the benchmark retrained (else the search's best)",
                    ),
                ],
            )
        )
        epochs_table, late = R.best_epoch_table(R.best_epochs(results, studies))
        if epochs_table is not None:
            doc.sections.append(Section("Best epochs", [*late, epochs_table]))
        doc.sections.append(_beta_section(w, studies, results, k))
        doc.sections.append(_optuna_section(w, studies))
        if results is not None:
            doc.sections.append(Section("All test metrics", [T.all_metrics_table(results)]))
        manifest["stage_seconds"]["report"] = round(time.perf_counter() - start, 1)
        manifest["figures"] = w.saved
        doc.sections.append(manifest_section(manifest))
        (folder / "report.md").write_text(to_markdown(doc))
        (folder / "report.html").write_text(to_html(doc, w.figures))
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")

    return replace_folder(reports_dir, name, fill, key="report.name")
