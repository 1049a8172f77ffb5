"""End to end through the real console scripts: `harness-run budget=smoke dataset=synthetic`
(a small synthetic dataset, every shipped default model), then `harness-report` on its
outputs, and the bad-input exits. Minutes, hence `slow`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from small_data import SMALL_SYNTHETIC
from test_report import FIGURES, check_report

from harness.benchmark.layout import load_results

BIN = Path(sys.executable).parent
TUNED = ("standard_vae", "mult_vae", "ease")
SMALL = SMALL_SYNTHETIC  # every stage runs, on a fraction of the default's users and items
SMOKE = ("budget=smoke", *SMALL)  # the default models: Standard-VAE, Mult-VAE, EASE, popularity


def _run(script: str, tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VAE_SWEEP_DATA_DIR": str(tmp / "data"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = [str(BIN / script), *overrides, f"results_dir={tmp / 'results'}"]
    if script != "harness-sweep":  # the sweep writes no report
        args.append(f"reports_dir={tmp / 'reports'}")
    return subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("e2e")
    done = _run("harness-run", tmp, *SMOKE)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, done


@pytest.mark.slow
def test_harness_run_writes_benchmark_files_and_a_complete_report(smoke_run):
    tmp, done = smoke_run
    bench = tmp / "results" / "synthetic"
    for name in ("benchmark.json", "metrics.csv", "tests.csv", "seeds.csv", "budget.csv"):
        assert (bench / name).exists(), name
    results = load_results(bench)
    assert set(results.metrics["model"]) == {*TUNED, "popularity"}
    assert results.info["test_scored_once"] is True
    budget = results.budget.set_index("model")
    assert {int(budget.loc[m, "n_trials_budget"]) for m in TUNED} == {2}
    assert {int(budget.loc[m, "finished"]) for m in TUNED} == {2}
    report = tmp / "reports" / "synthetic"
    check_report(report, results.metrics, [*FIGURES, *(f"history_{m}" for m in TUNED)])
    markdown = (report / "report.md").read_text()
    for model in TUNED:  # an importance figure, or the reason it was skipped
        assert (report / "figures" / f"importance_{model}.png").exists() or (
            f"{model}: parameter importances skipped" in markdown
        )
    manifest = json.loads((report / "manifest.json").read_text())
    assert {"data", "sweep", "benchmark", "report"} <= set(manifest["stage_seconds"])
    assert manifest["config"]["budget"]["name"] == "smoke"
    assert manifest["split_fingerprint"] == results.info["split_fingerprint"]
    assert "report.html" in done.stdout and "| mult_vae |" in done.stdout
    assert not [p.name for p in (tmp / "reports").iterdir() if p.name != "synthetic"]


@pytest.mark.slow
def test_harness_report_regenerates_from_the_files(smoke_run):
    tmp, _ = smoke_run
    done = _run("harness-report", tmp, *SMOKE, "report.name=again")
    assert done.returncode == 0, done.stderr[-3000:]
    results = load_results(tmp / "results" / "synthetic")
    check_report(tmp / "reports" / "again", results.metrics, list(FIGURES))


@pytest.mark.slow
def test_bad_inputs_exit_with_the_command_to_run_and_leave_no_report(tmp_path):
    done = _run("harness-report", tmp_path, *SMALL, "report.require_benchmark=true")
    assert done.returncode == 2
    assert "harness-benchmark dataset=synthetic" in done.stderr
    for script in ("harness-benchmark", "harness-report"):
        done = _run(script, tmp_path, *SMALL)
        assert done.returncode == 2, script
        assert "no study storage" in done.stderr and "harness-sweep model=" in done.stderr
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())
    assert not (tmp_path / "results" / "optuna.db").exists()


@pytest.mark.slow
def test_the_same_command_from_a_clean_folder_gives_the_same_numbers(smoke_run, tmp_path):
    first, _ = smoke_run
    done = _run("harness-run", tmp_path, *SMOKE)
    assert done.returncode == 0, done.stderr[-3000:]
    for table in ("metrics.csv", "tests.csv", "budget.csv"):
        a = (first / "results" / "synthetic" / table).read_text()
        b = (tmp_path / "results" / "synthetic" / table).read_text()
        assert a == b, table
    seeds = [
        load_results(d / "results" / "synthetic").seeds.drop(columns="wall_seconds")
        for d in (first, tmp_path)
    ]
    assert seeds[0].equals(seeds[1])
    manifest = json.loads((tmp_path / "reports" / "synthetic" / "manifest.json").read_text())
    assert manifest["rerun"]["sweep_seed"] == 0 and manifest["rerun"]["selection_seeds"] == [0, 1]
    assert manifest["rerun"]["test_seeds"] == [2, 3]  # fresh seeds for the test users
    assert manifest["rerun"]["protocol_seed"] == 98765 and manifest["git"]["commit"]
    assert "dirty" in manifest["git"]
    ledger = (tmp_path / "results" / "test_ledger.jsonl").read_text().splitlines()
    assert len(ledger) == sum(
        r["scored"]
        for variants in json.loads(
            (tmp_path / "results" / "synthetic" / "benchmark.json").read_text()
        )["test_ledger"].values()
        for r in variants.values()
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "override", "message"),
    [
        ("harness-sweep", "search_space.drop_encoder=interval(0.9,1.5)", "[0, 1)"),
        ("harness-run", "protocol.n_val_users=0", "protocol.n_val_users=0"),
        ("harness-run", "benchmark.margin=-0.5", "benchmark.margin=-0.5 is negative"),
        (
            "harness-run",
            "+benchmark.intervals=t",
            "unknown benchmark option(s) benchmark.intervals",
        ),
    ],
)
def test_bad_config_exits_2_with_one_line_before_loading_data(tmp_path, script, override, message):
    done = _run(script, tmp_path, "dataset=synthetic", override)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{script}: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr  # TF may log above it
    assert not (tmp_path / "data").exists()  # no data was loaded (or generated)
    assert not (tmp_path / "results" / "optuna.db").exists()


@pytest.mark.slow
def test_harness_run_with_folds_pools_every_user_once_and_reports_per_fold(tmp_path):
    """`harness-run protocol.folds=2`: each fold swept and benchmarked on its own split, then
    pooled: every eligible user a test user once, per-fold rows, findings and comparisons.csv."""
    import numpy as np
    import pandas as pd

    small = (
        "dataset.options.n_users=400",
        "dataset.options.n_items=150",
        "dataset.options.density=0.06",
        "dataset.n_heldout_users=40",
    )
    models = "models=[mult_vae,ease,popularity]"  # the baseline, a closed form, a fixed one
    done = _run(
        "harness-run",
        tmp_path,
        "budget=smoke",
        "dataset=synthetic",
        *small,
        models,
        "protocol.folds=2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "power preflight:" in done.stderr
    results = tmp_path / "results"
    pooled = load_results(results / "synthetic")
    folds = [load_results(results / f"synthetic-fold{k}") for k in range(2)]
    users = [np.asarray(f.per_user("ease")["test_users"]) for f in folds]
    assert not set(users[0]) & set(users[1])  # disjoint test folds
    arrays = pooled.per_user("ease")
    assert np.array_equal(arrays["test_users"], np.concatenate(users))
    assert pooled.info["fold_fingerprints"] == [f.info["split_fingerprint"] for f in folds]
    assert len({f.info["split_fingerprint"] for f in folds}) == 2
    assert set(pooled.folds["fold"]) == {0, 1}
    for fold in folds:  # each fold's final runs used its own fresh test seeds
        assert fold.info["test_seeds"] == [2, 3]
    report = tmp_path / "reports" / "synthetic"
    comparisons = pd.read_csv(report / "comparisons.csv")
    assert set(comparisons["model"]) == {"ease", "popularity"}  # each against mult_vae
    assert (comparisons["n_users"] <= len(arrays["test_users"])).all()
    markdown = (report / "report.md").read_text()
    assert markdown.index("## Findings") < markdown.index("## Test results")
    assert "pooled over 2 folds" in markdown and "| pooled |" in markdown
    assert (results / "synthetic.power.json").exists()
