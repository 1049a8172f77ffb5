"""The report from real Optuna studies with complete, pruned, failed and running trials."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from harness.benchmark.layout import MissingInputError, load_results, write_results
from harness.benchmark.summary import ModelRun, summary_tables
from harness.report import build as build_module
from harness.report import build_report, collect_manifest
from harness.report.tables import MAIN_METRICS

optuna.logging.set_verbosity(optuna.logging.WARNING)
N_EPOCHS = 6


def _epoch_attrs(rng: np.random.Generator, n: int, cap: float | None) -> dict:
    ndcg = list(np.clip(np.cumsum(rng.uniform(0.0, 0.05, n)) + 0.1, 0, 1))
    beta = list(np.minimum(np.linspace(0.05, 1.0, n), cap)) if cap else [0.2] * n
    return {
        "ndcg_per_epoch": ndcg,
        "loss_per_epoch": [1.0] * n,
        "val_loss_per_epoch": [None] * n,
        "beta_per_epoch": beta,
        "lr_per_epoch": [1e-3] * n,
        "best_epoch": int(np.argmax(ndcg)),
        "optimal_beta": beta[int(np.argmax(ndcg))],
        "epochs_run": n,
        "wall_seconds": 0.1,
        "split_fingerprint": "ab" * 32,
    }


def _make_study(storage: str, model: str, rng: np.random.Generator) -> optuna.Study:
    study = optuna.create_study(
        storage=storage, study_name=f"synthetic-abab-{model}", direction="maximize"
    )
    study.set_user_attr("model", model)
    study.set_user_attr("k", 100)
    study.set_user_attr("n_trials_budget", 4)
    for i in range(4):
        trial = study.ask()
        if model == "ease":
            lam = trial.suggest_float("lam", 1.0, 1000.0, log=True)
            attrs = _epoch_attrs(rng, 1, None) | {"params_full": {"lam": lam, "k": 100}}
        else:
            cap = trial.suggest_float("anneal_cap", 0.05, 1.0)
            trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
            annealing = model == "mult_vae"
            attrs = _epoch_attrs(rng, N_EPOCHS, cap if annealing else None) | {
                "params_full": {
                    "annealing": annealing,
                    "anneal_cap": cap,
                    "beta": 0.2,
                    "n_epochs": N_EPOCHS,
                }
            }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if i == 2 and model == "mult_vae":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif i == 3 and model == "standard_vae":
            trial.set_user_attr("failure_reason", "TrainingDivergedError: NaN loss at epoch 2")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, max(v for v in attrs["ndcg_per_epoch"] if v is not None))
    if model == "mult_vae":
        study.ask()  # a trial still running: reports must cope
    return study


@pytest.fixture
def studies(tmp_path: Path) -> dict[str, optuna.Study]:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    rng = np.random.default_rng(0)
    return {m: _make_study(storage, m, rng) for m in ("standard_vae", "mult_vae", "ease")}


def _fake_results(tmp_path: Path, models: list[str]) -> Path:
    rng = np.random.default_rng(1)
    runs = []
    for i, model in enumerate(models):
        per_user = {
            m: np.clip(rng.normal(0.3 + 0.02 * i, 0.1, (3, 50)), 0, 1)
            for m in ("ndcg@10", "ndcg@20", "ndcg@100", "recall@20", "recall@50")
        }
        per_user["ndcg@100"][:, 0] = np.nan  # a user without held-out items
        info = {
            "budget": {
                "study": f"synthetic-abab-{model}",
                "n_trials_budget": 4,
                "finished": 4,
                "complete": 3,
                "pruned": 1,
                "failed": 0,
                "note": "",
            },
            "candidates": [
                {"trial": 0, "search_value": 0.3, "val_ndcg_mean": 0.29, "lr_schedule": "constant"}
            ],
            "chosen_trial": 0,
            "params": {},
            "saved_models": [f"models/{model}-seed{s}.keras" for s in range(3)],
        }
        if model != "ease":
            history = {
                "beta": list(np.linspace(0, 1, 8)),
                "ndcg": [0.1, 0.2, 0.3, 0.35, 0.34, 0.33, 0.3, 0.28],
            }
            info["beta"] = {
                "search": {"param": "anneal_cap", "value": 0.3, "test_mean": 0.31},
                "liang": {
                    "optimal_beta": [0.4, 0.45, 0.5],
                    "optimal_beta_mean": 0.45,
                    "test": {"mean": 0.3, "ci_low": 0.28, "ci_high": 0.32},
                    "history": history,
                    "seed": 0,
                },
            }
        seeds = [
            {
                "seed": s,
                "val_ndcg": 0.3,
                "best_epoch": 3,
                "optimal_beta": 0.2,
                "epochs_run": 6,
                "wall_seconds": 1.5,
            }
            for s in range(3)
        ]
        runs.append(ModelRun(model, per_user, {"coverage@100": [0.2, 0.21, 0.22]}, seeds, info))
    info = {
        "name": "synthetic",
        "dataset": "synthetic",
        "split_fingerprint": "ab" * 32,
        "n_test_users": 50,
        "seeds": [0, 1, 2],
        "n_seeds": 3,
        "baseline": "mult_vae",
        "test_metric": "ndcg@100",
        "test_scorings": {m: {"final": 3} for m in models},
        "models": {r.model: r.info for r in runs},
    }
    target = tmp_path / "results" / "synthetic"
    write_results(
        target, info, summary_tables(runs, baseline="mult_vae"), {r.model: r.per_user for r in runs}
    )
    return target


class HtmlCollector(HTMLParser):
    """Collects <img> sources and table-cell texts of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[str] = []
        self._in_td = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_td = tag == "td"

    def handle_endtag(self, tag):
        self._in_td = False

    def handle_data(self, data):
        if self._in_td:
            self.cells.append(data)


FIGURES = ("ndcg_per_epoch", "beta_per_epoch", "ndcg_vs_beta", "test_metrics")


def check_report(out: Path, metrics: pd.DataFrame, stems: list[str]) -> None:
    """Every figure as PNG + SVG, embedded in valid HTML; table numbers equal metrics.csv."""
    for stem in stems:
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 0, stem
    parser = HtmlCollector()
    parser.feed((out / "report.html").read_text())
    parser.close()
    assert len(parser.images) == len(list((out / "figures").glob("*.png"))) >= len(stems)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    cells = set(parser.cells)
    markdown = (out / "report.md").read_text()
    for _, row in metrics[metrics["metric"].isin(MAIN_METRICS)].iterrows():
        cell = f"{row['mean']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
        assert cell in cells and cell in markdown, cell


def _manifest() -> dict:
    return collect_manifest(
        config={"dataset": {"name": "synthetic"}},
        split_fingerprint="ab" * 32,
        stage_seconds={"sweep": 1.0, "benchmark": 2.0},
    )


def test_report_has_every_figure_embedded_html_and_benchmark_numbers(tmp_path, studies):
    results = load_results(_fake_results(tmp_path, list(studies)))
    out = build_report(
        name="synthetic",
        studies=studies,
        results=results,
        manifest=_manifest(),
        reports_dir=tmp_path / "reports",
    )
    stems = [*FIGURES, *(f"history_{m}" for m in studies), *(f"importance_{m}" for m in studies)]
    check_report(out, results.metrics, stems)
    # the kept models are linked relative to the report, in Markdown and HTML
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    link = "../../results/synthetic/models/mult_vae-seed2.keras"
    assert f"[models/mult_vae-seed2.keras]({link})" in markdown
    assert f'<a href="{link}">models/mult_vae-seed2.keras</a>' in page
    assert "| constant |" in markdown  # the chosen configuration's lr schedule
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stage_seconds"]) == {"sweep", "benchmark", "report"}
    assert manifest["machine"]["cores"] >= 1 and manifest["packages"]["optuna"]
    assert not [p for p in out.parent.iterdir() if p.name != "synthetic"]  # no temp left
    # the findings come first, generated from the verdicts; comparisons.csv holds them flat
    assert markdown.index("## Findings") < markdown.index("## Test results")
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert list(comparisons.columns) == [
        "model", "baseline", "metric", "n_users", "mean_diff", "ci_low", "ci_high", "p",
        "p_holm", "mdd", "verdict",
    ]  # fmt: skip
    tests = results.tests.set_index("model")
    summary = (out / "summary.md").read_text()
    assert summary in markdown
    for _, row in comparisons.iterrows():
        assert row["mean_diff"] == pytest.approx(tests.loc[row["model"], "mean_difference"])
        assert row["verdict"] == tests.loc[row["model"], "verdict"]
        line = next(x for x in summary.splitlines() if x.startswith(f"- {row['model']} − "))
        assert f"{row['mean_diff']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" in line
        if str(row["verdict"]).startswith("not distinguishable"):
            assert "not distinguishable" in line
    assert "descriptive: only ndcg@100 is tested" in summary


def test_report_without_benchmark_and_with_a_single_trial_study(tmp_path, studies):
    storage = f"sqlite:///{tmp_path / 'one.db'}"
    lonely = optuna.create_study(storage=storage, study_name="one", direction="maximize")
    lonely.enqueue_trial({"lam": 10.0})
    lonely.optimize(lambda t: t.suggest_float("lam", 1, 100), n_trials=1)
    out = build_report(
        name="sweeps-only",
        studies={**studies, "popularity": lonely},
        results=None,
        manifest=_manifest(),
        reports_dir=tmp_path / "reports",
    )
    text = (out / "report.md").read_text()
    assert "No benchmark results yet" in text
    assert "popularity: parameter importances skipped" in text
    assert (out / "figures" / "ndcg_per_epoch.png").exists()


def test_failed_report_leaves_nothing_partial_and_keeps_the_old_one(tmp_path, studies, monkeypatch):
    reports = tmp_path / "reports"
    out = build_report(
        name="r", studies=studies, results=None, manifest=_manifest(), reports_dir=reports
    )
    before = (out / "report.md").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build_module, "to_html", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(
            name="r", studies=studies, results=None, manifest=_manifest(), reports_dir=reports
        )
    with pytest.raises(RuntimeError):
        build_report(
            name="new", studies=studies, results=None, manifest=_manifest(), reports_dir=reports
        )
    assert sorted(p.name for p in reports.iterdir()) == ["r"]
    assert (out / "report.md").read_text() == before


def test_missing_benchmark_names_the_command(tmp_path):
    with pytest.raises(MissingInputError, match="harness-benchmark"):
        load_results(tmp_path / "results" / "nothing")


def test_folds_and_ledger_tables_show_each_fold_and_the_meetings(tmp_path):
    import dataclasses

    from harness.report.run_tables import ledger_table
    from harness.report.tables import folds_table

    results = load_results(_fake_results(tmp_path, ["mult_vae", "ease"]))
    assert folds_table(results) is None and ledger_table(results) is None
    folds = pd.DataFrame(
        {
            "fold": [0, 0, 1, 1],
            "model": ["mult_vae", "ease", "mult_vae", "ease"],
            "split_fingerprint": ["a", "a", "b", "b"],
            "n_users": [50, 50, 49, 49],
            "metric": "ndcg@100",
            "mean": [0.40, 0.42, 0.44, 0.43],
            "ci_low": 0.3,
            "ci_high": 0.5,
            "chosen_trial": [3, None, 7, None],
            "benchmark_seconds": [10.0, 10.0, 12.0, 12.0],
            "sweep_seconds": [100.0, 100.0, 90.0, 90.0],
        }
    )
    ledger = {
        "mult_vae": {
            "final": {
                "scored": 1,
                "reused": 2,
                "met_test_users": 3,
                "configs": {"5": "abcdef0123456789"},
                "config_hash": "abcdef0123456789",
                "rescored": {"5": "model code or package versions changed"},
            }
        }
    }
    results = dataclasses.replace(
        results,
        folds=folds,
        info={
            **results.info,
            "test_ledger": ledger,
            "test_exposure": {"configurations": 4, "scorings": 9},
        },
    )
    table = folds_table(results)
    assert table.header == ["fold", "test users", "mult_vae", "ease", "sweep s", "benchmark s"]
    assert table.rows[0] == [
        "0",
        "50",
        "0.4000 [0.3000, 0.5000] (trial 3)",
        "0.4200 [0.3000, 0.5000]",
        "100",
        "10",
    ]
    assert table.rows[-1][:2] == ["pooled", "99"] and table.rows[-1][-2:] == ["190", "22"]
    ledger_rows = ledger_table(results)
    assert ledger_rows.rows == [
        [
            "mult_vae",
            "final",
            "1",
            "2",
            "3",
            "abcdef012345",
            "seed 5: model code or package versions changed",
        ]
    ]
    assert "4 distinct configurations in 9 scorings" in ledger_rows.caption


def test_verdict_sentences_follow_the_decisions_and_replace_the_readme_block(tmp_path):
    """Each verdict reads as its decision; the README block is replaced, nothing else."""
    import dataclasses

    from harness.report.verdicts import BEGIN, END, replace_block, summary_lines

    results = load_results(_fake_results(tmp_path, ["mult_vae", "ease", "popularity"]))
    tests = results.tests.copy()
    tests["verdict"] = ["better", "equivalent within ±0.01"]
    lines = summary_lines(dataclasses.replace(results, tests=tests))
    assert any(
        x.startswith("- ease − mult_vae") and "ease is better than mult_vae" in x for x in lines
    )
    assert any("equivalent within ±0.01" in x and x.startswith("- popularity") for x in lines)
    assert not any(x.startswith("- What this run cannot tell") for x in lines)
    tests["verdict"] = ["worse", "not distinguishable with 50 users (detectable difference ±0.05)"]
    tests["mdd"] = [0.03, 0.05]
    lines = summary_lines(dataclasses.replace(results, tests=tests))
    assert any("ease is worse than mult_vae" in x for x in lines)
    cannot = next(x for x in lines if x.startswith("- What this run cannot tell"))
    assert "popularity" in cannot and "±0.0500" in cannot
    # what would resolve the margin, from this run's variance components: users or seeds
    assert "popularity: about" in cannot or "popularity: more seeds" in cannot
    readme = f"intro\n{BEGIN}\nold text\n{END}\noutro\n"
    assert replace_block(readme, "- new\n") == f"intro\n{BEGIN}\n- new\n{END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        replace_block("no markers here", "- new\n")


def test_published_numbers_stand_beside_the_measured_ones(tmp_path):
    from harness.report.tables import published_table

    results = load_results(_fake_results(tmp_path, ["mult_vae", "ease"]))
    assert published_table(results, None) is None
    published = {
        "source": "Paper 2021, Table III",
        "models": {"mult_vae": {"ndcg@100": 0.426}, "recvae": {"ndcg@100": 0.442}},
    }
    table = published_table(results, published)
    measured = results.metrics.set_index(["model", "metric"]).loc[("mult_vae", "ndcg@100")]
    assert table.rows[0][:3] == ["mult_vae", "ndcg@100", "0.426"]
    assert table.rows[0][4] == f"{measured['mean'] - 0.426:+.3f}"
    assert table.rows[1][3] == "not run"  # published, but not benchmarked here
    assert "Paper 2021, Table III" in table.caption
