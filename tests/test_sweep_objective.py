"""The objective on a tiny real split: FixedTrial, divergence, pruning, non-VAE models."""

from __future__ import annotations

import functools
import math

import optuna
import pytest
from optuna.trial import TrialState

from harness.data import load_interactions, make_split
from harness.models import TrainingDivergedError
from harness.sweep import objective, parse_search_space

TINY_VAE = {"intermediate_dim": 16, "latent_dim": 8, "n_epochs": 2, "batch_size": 50, "k": 100}
RECORD_KEYS = {
    "ndcg_per_epoch",
    "loss_per_epoch",
    "val_loss_per_epoch",
    "beta_per_epoch",
    "lr_per_epoch",
    "optimal_beta",
    "best_epoch",
    "epochs_run",
    "wall_seconds",
    "split_fingerprint",
    "params_full",
}


@pytest.fixture(scope="module")
def split():
    frame = load_interactions("synthetic", n_users=300, n_items=150, density=0.05, seed=1)
    return make_split(frame, n_val_users=50, n_test_users=50)


@pytest.fixture(scope="module")
def space():
    return parse_search_space(
        {"learning_rate": "tag(log, interval(1e-4, 1e-2))", "beta": "interval(0.1, 1.0)"},
        model_name="standard_vae",
    )


def test_fixed_trial_returns_best_ndcg_and_records_everything(split, space) -> None:
    trial = optuna.trial.FixedTrial({"learning_rate": 3e-3, "beta": 0.5})
    value = objective(trial, split, "standard_vae", TINY_VAE, space)
    attrs = trial.user_attrs
    assert set(attrs) == RECORD_KEYS
    assert 0.0 < value <= 1.0
    assert value == max(attrs["ndcg_per_epoch"])
    assert attrs["epochs_run"] == 2 and len(attrs["loss_per_epoch"]) == 2
    assert attrs["optimal_beta"] == pytest.approx(0.5)
    assert attrs["best_epoch"] == attrs["ndcg_per_epoch"].index(value)
    assert attrs["split_fingerprint"] == split.fingerprint
    assert attrs["params_full"] == {**TINY_VAE, "learning_rate": 3e-3, "beta": 0.5, "verbose": 0}


def test_diverging_trial_records_the_reason(split, space) -> None:
    trial = optuna.trial.FixedTrial({"learning_rate": 1e6, "beta": 0.5})
    with pytest.warns(UserWarning, match="out of the range"):
        with pytest.raises(TrainingDivergedError):
            objective(trial, split, "standard_vae", TINY_VAE, space)
    assert trial.user_attrs["failure_reason"].startswith("TrainingDivergedError: ")
    assert trial.user_attrs["best_epoch"] is None
    assert all(v is None or math.isfinite(v) for v in trial.user_attrs["loss_per_epoch"])


def test_pruned_trial_keeps_its_records(split, space) -> None:
    # NDCG never reaches 2, so the threshold pruner stops the trial after its first epoch.
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(2.0))
    func = functools.partial(
        objective, split=split, model_name="standard_vae", fixed_params=TINY_VAE, space=space
    )
    study.optimize(func, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["epochs_run"] == 1 and set(trial.user_attrs) == RECORD_KEYS
    assert list(trial.intermediate_values) == [0]


@pytest.mark.parametrize(("model", "params"), [("ease", {"lam": 50.0}), ("popularity", {})])
def test_non_vae_models_report_once(split, model: str, params: dict) -> None:
    trial = optuna.trial.FixedTrial({})
    value = objective(trial, split, model, params, parse_search_space({}, model_name=model))
    assert trial.user_attrs["epochs_run"] == 1 and 0.0 < value <= 1.0
    assert trial.user_attrs["optimal_beta"] is None and trial.user_attrs["loss_per_epoch"] == [None]


def test_trial_seed_is_derived_from_sweep_seed_and_trial_number(split, space) -> None:
    """Same sweep seed and trial number -> same training seed -> the same value, twice."""
    from harness.sweep.objective import trial_seed

    values, seeds = [], []
    for _ in range(2):
        trial = optuna.trial.FixedTrial({"learning_rate": 3e-3, "beta": 0.5}, number=3)
        values.append(objective(trial, split, "standard_vae", TINY_VAE, space, sweep_seed=7))
        seeds.append(trial.user_attrs["params_full"]["seed"])
    assert seeds[0] == seeds[1] == trial_seed(7, 3)
    assert values[0] == values[1]
    assert len({trial_seed(7, n) for n in range(50)} | {trial_seed(8, n) for n in range(50)}) == 100
    # an explicit model.seed wins over the derived one
    trial = optuna.trial.FixedTrial({"learning_rate": 3e-3, "beta": 0.5}, number=3)
    objective(trial, split, "standard_vae", {**TINY_VAE, "seed": 11}, space, sweep_seed=7)
    assert trial.user_attrs["params_full"]["seed"] == 11
