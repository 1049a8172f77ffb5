"""A pool worker's trial, run in-process: its pruner sees only the history it was given (the
finished trials of earlier batches), and the coordinator's tell writes the outcome back."""

from __future__ import annotations

import datetime as dt

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from harness.data import load_interactions, make_split
from harness.sweep import SweepSettings, parse_search_space
from harness.sweep.batch import TrialTask, execute_trial, history_before, tell_outcome

MODEL = {"intermediate_dim": 16, "latent_dim": 8, "n_epochs": 3, "batch_size": 50, "k": 100}
SETTINGS = SweepSettings(pruner="median", n_startup_trials=1, n_warmup_epochs=0, seed=0)


@pytest.fixture(scope="module")
def split():
    frame = load_interactions("synthetic", n_users=300, n_items=150, density=0.05, seed=1)
    return make_split(frame, n_val_users=50, n_test_users=50)


def _finished(number: int, value: float) -> FrozenTrial:
    now = dt.datetime.now()
    return FrozenTrial(
        number=number, state=TrialState.COMPLETE, value=value, datetime_start=now,
        datetime_complete=now, params={}, distributions={}, user_attrs={}, system_attrs={},
        intermediate_values={0: value, 1: value, 2: value}, trial_id=0,
    )  # fmt: skip


def _task(number: int, history: tuple) -> TrialTask:
    space = parse_search_space({"beta": "interval(0.1, 1.0)"}, model_name="standard_vae")
    return TrialTask(
        study_name="s",
        number=number,
        params={"beta": 0.5},
        distributions=dict(space.distributions),
        system_attrs={},
        history=history,
        model_name="standard_vae",
        fixed_params=MODEL,
        space=space,
        settings=SETTINGS,
    )


def test_the_pruner_compares_only_with_the_history_it_was_given(split) -> None:
    alone = execute_trial(_task(3, ()), split)
    assert alone.state == TrialState.COMPLETE and alone.error is None
    assert sorted(alone.intermediate_values) == [0, 1, 2]
    assert alone.user_attrs["epochs_run"] == 3 and alone.user_attrs["params_full"]["beta"] == 0.5
    # Trial 3 after two far better finished trials (numbers 0 and 2; 1 is a peer of its batch,
    # absent): pruned at the first epoch the median pruner may act.
    better = execute_trial(_task(3, (_finished(0, 0.99), _finished(2, 0.99))), split)
    assert better.state == TrialState.PRUNED and better.user_attrs["epochs_run"] == 1
    # The same seed for the same trial number: the first epoch's value is unchanged.
    assert better.intermediate_values[0] == alone.intermediate_values[0]


def test_tell_writes_the_outcome_and_history_strips_records(split) -> None:
    study = optuna.create_study(direction="maximize")
    space = parse_search_space({"beta": "interval(0.1, 1.0)"}, model_name="standard_vae")
    trial = study.ask(dict(space.distributions))
    outcome = execute_trial(_task(trial.number, ()), split)
    frozen = tell_outcome(study, trial, outcome)
    assert frozen.state == TrialState.COMPLETE and frozen.value == outcome.value
    assert frozen.intermediate_values == outcome.intermediate_values
    assert frozen.user_attrs["ndcg_per_epoch"] == outcome.user_attrs["ndcg_per_epoch"]
    (past,) = history_before(study, trial.number + 1)
    assert past.user_attrs == {} and past.intermediate_values == frozen.intermediate_values
    assert history_before(study, trial.number) == ()
