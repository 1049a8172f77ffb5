"""Reproducible parallel sweeps: the same seed and batch size give the same study with two
worker processes as with one, trial by trial (values, states, params, per-epoch values),
pruning included; the default batch size (window) is the same for 1 and 2 workers, so the
defaults give it too."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from harness.data import load_interactions, make_split
from harness.sweep import SweepSettings, run_sweep

pytestmark = pytest.mark.slow
MODEL = {
    "name": "standard_vae",
    "intermediate_dim": 16,
    "latent_dim": 8,
    "n_epochs": 3,
    "batch_size": 50,
    "k": 100,
}
SPACE = {"learning_rate": "tag(log, interval(1e-4, 1e-2))", "beta": "interval(0.1, 1.0)"}


def _sweep(split, results: Path, **settings) -> optuna.Study:
    return run_sweep(
        split=split,
        dataset_name="synthetic",
        model_name="standard_vae",
        model_params=MODEL,
        search_space=SPACE,
        settings=SweepSettings(quiet=True, n_startup_trials=2, n_warmup_epochs=1, **settings),
        results_dir=results,
    )


def _record(study: optuna.Study) -> list[tuple]:
    return [
        (
            t.number,
            t.state,
            t.value,
            t.params,
            t.intermediate_values,
            t.user_attrs["epochs_run"],
            {k: v for k, v in t.system_attrs.items() if k.startswith("completed_rung")},
        )
        for t in study.trials
    ]


def test_two_workers_give_the_one_worker_study_trial_by_trial(tmp_path: Path) -> None:
    frame = load_interactions("synthetic", n_users=300, n_items=150, density=0.05, seed=1)
    split = make_split(frame, n_val_users=50, n_test_users=50)
    # successive halving prunes often, and keeps its rungs in system attrs
    # no batch_size: the default window, max(4, 2 x workers), is 4 for both
    common = {"n_trials": 8, "pruner": "successive_halving"}
    parallel = _record(_sweep(split, tmp_path / "parallel", n_workers=2, **common))
    serial = _record(_sweep(split, tmp_path / "serial", n_workers=1, **common))
    assert parallel == serial
    states = [trial[1] for trial in serial]
    assert len(states) == 8 and optuna.trial.TrialState.PRUNED in states  # pruning took part
    assert serial[0][3] == {"learning_rate": 1e-3, "beta": 1.0}  # the seed default first


def test_default_window_is_two_trials_per_worker_at_least_four() -> None:
    assert [SweepSettings().window(n) for n in (1, 2, 3, 8)] == [4, 4, 6, 16]
    assert SweepSettings(batch_size=3).window(8) == 3  # an explicit batch size wins
