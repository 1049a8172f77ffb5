"""In-process sweeps on a tiny split: budget, defaults first, NaN trials, resume, exports."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from harness.data import load_interactions, make_split
from harness.sweep import (
    SweepSettings,
    default_storage,
    load_study,
    run_many,
    run_sweep,
    study_name_for,
)

MODEL = {
    "name": "standard_vae",
    "intermediate_dim": 16,
    "latent_dim": 8,
    "n_epochs": 2,
    "batch_size": 50,
    "k": 100,
}
SPACE = {
    "learning_rate": "tag(log, interval(1e-4, 1e-2))",
    "beta": "interval(0.1, 1.0)",
    "latent_dim": 8,  # a plain value: fixed, not searched
}
SETTINGS = SweepSettings(n_trials=2, pruner="none", quiet=True, n_startup_trials=1)


@pytest.fixture(scope="module")
def split():
    frame = load_interactions("synthetic", n_users=300, n_items=150, density=0.05, seed=1)
    return make_split(frame, n_val_users=50, n_test_users=50)


def sweep(split, results: Path, settings: SweepSettings = SETTINGS) -> optuna.Study:
    return run_sweep(
        split=split,
        dataset_name="synthetic",
        model_name="standard_vae",
        model_params=MODEL,
        search_space=SPACE,
        settings=settings,
        results_dir=results,
        config={"note": "test"},
    )


def test_sweep_resumes_counts_finished_trials_and_survives_nan(split, tmp_path: Path) -> None:
    study = sweep(split, tmp_path)
    name = study_name_for("synthetic", split.fingerprint, "standard_vae")
    assert study.study_name == name
    first = study.trials
    assert [t.state for t in first] == [TrialState.COMPLETE] * 2
    # Trial 0 is the seed default configuration (beta 1.0, lr 1e-3 from MODEL_DEFAULTS).
    assert first[0].params == {"learning_rate": 1e-3, "beta": 1.0}
    assert study.user_attrs["split_fingerprint"] == split.fingerprint
    assert study.user_attrs["config"] == {"note": "test"} and study.user_attrs["k"] == 100

    # Force a diverging trial, then resume with a larger budget: the NaN trial is FAILED with
    # its reason, does not count, and the sweep goes on to 4 finished trials.
    loaded = load_study(default_storage(tmp_path), name)
    loaded.enqueue_trial({"learning_rate": 1e6, "beta": 0.5})
    study = sweep(split, tmp_path, SETTINGS.replace(n_trials=4))
    trials = study.trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 1
    failed = trials[2]
    assert failed.state == TrialState.FAIL and failed.params["learning_rate"] == 1e6
    assert "TrainingDivergedError" in failed.user_attrs["failure_reason"]
    for before, after in zip(first, trials[:2], strict=True):
        assert (before.number, before.value, before.params) == (
            after.number,
            after.value,
            after.params,
        )
    assert all(t.user_attrs["params_full"]["latent_dim"] == 8 for t in trials)

    # The same command once more does nothing: the budget is already spent.
    assert len(sweep(split, tmp_path, SETTINGS.replace(n_trials=4)).trials) == 5
    check_exports(tmp_path / name, n_trials=5)


def check_exports(out: Path, *, n_trials: int) -> None:
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == n_trials and trials["number"].is_unique
    assert {"state", "value", "wall_seconds", "failure_reason", "params_beta"} <= set(trials)
    assert trials.loc[trials["state"] == "FAIL", "failure_reason"].notna().all()
    epochs = pd.read_csv(out / "trial_epochs.csv")
    assert list(epochs.columns) == [
        "trial",
        "epoch",
        "ndcg",
        "loss",
        "val_loss",
        "beta",
        "lr",
        "state",
    ]
    assert set(epochs.loc[epochs["state"] == "COMPLETE", "epoch"]) == {0, 1}
    best = yaml.safe_load((out / "best_params.yaml").read_text())
    complete = trials[trials["state"] == "COMPLETE"]
    assert best["best_value"] == pytest.approx(complete["value"].max())
    assert best["params_full"]["intermediate_dim"] == 16 and best["n_fail"] == 1
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files behind


def test_run_many_gives_each_model_the_same_budget(split, tmp_path: Path) -> None:
    cfg = {
        "dataset": {"name": "synthetic"},
        "models": {
            "ease": {"name": "ease", "lam": 500.0, "k": 100, "lambdas": None},
            "popularity": {"name": "popularity", "k": 100},
        },
        "search_spaces": {"ease": {"lam": "tag(log, interval(1.0, 1000.0))"}, "popularity": {}},
        "sweep": {"n_trials": 2, "quiet": True, "pruner": "none", "models": None},
        "results_dir": str(tmp_path),
    }
    studies = run_many(cfg, ["ease", "popularity"], split=split)
    assert list(studies) == ["ease", "popularity"]
    for model, study in studies.items():
        assert study.study_name.endswith(model)
        finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        assert len(finished) == 2
        assert (tmp_path / study.study_name / "best_params.yaml").exists()
