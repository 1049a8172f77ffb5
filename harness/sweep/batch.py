"""Trials run on a worker pool, reproducibly.

The coordinator (`runner.run_coordinator`) owns the study. It keeps `batch_size` (B) asked
trials in flight: trial n is asked right after trial n - B is told, each is sent to a pool
worker as a `TrialTask`, and the `TrialOutcome`s are told in trial-number order. So when
trial n is asked, the study holds exactly trials 0..n-B finished and n-B+1..n-1 running,
whatever the timing: the sampler sees the same study. A worker runs the usual objective
against an in-memory copy of the study that holds only the finished trials it was given
(0..n-B; the trials still in flight are empty placeholders there), so the pruner's decisions
do not depend on which trial happens to run faster either. The same seed and batch size
therefore give the same trials and values with any number of workers.

Per-epoch values also reach the real study while the trial runs (`emit` -> the coordinator
writes them), so dashboards and kill-and-resume behave as with in-process trials.
"""

from __future__ import annotations

import datetime as dt
import traceback
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState

from harness import pool as worker_pool
from harness.compat.optuna import optimize_loop_flag, storage_of, study_id_of, trial_id_of
from harness.sweep.objective import TrialFailedError, objective
from harness.sweep.space import SearchSpace
from harness.sweep.study import make_pruner

# Finished states a later batch's pruner may compare with.
HISTORY_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class TrialTask:
    """One asked trial, as a worker needs it (picklable)."""

    study_name: str
    number: int
    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]
    system_attrs: dict[str, Any]
    history: tuple[FrozenTrial, ...]  # finished trials of earlier batches, records stripped
    model_name: str
    fixed_params: dict[str, Any]
    space: SearchSpace
    settings: Any  # SweepSettings


@dataclass
class TrialOutcome:
    """What a worker's trial produced; `tell_outcome` writes it to the real study."""

    state: TrialState
    value: float | None
    user_attrs: dict[str, Any]
    intermediate_values: dict[int, float]
    system_attrs: dict[str, Any] = field(default_factory=dict)  # set by the pruner
    expected_failure: str | None = None  # diverged / no finite NDCG: logged, the sweep goes on
    error: str | None = None  # any other exception (a bug): the sweep stops after the batch
    lost: str | None = None  # the worker died/hung/was cancelled: failed, then retried


def make_task(study: optuna.Study, trial: optuna.Trial, history: tuple, plan: Any) -> TrialTask:
    """The task for an asked `trial` of `study` (`plan`: a `runner.WorkerPlan`)."""
    frozen = storage_of(study).get_trial(trial_id_of(trial))
    return TrialTask(
        study_name=study.study_name,
        number=trial.number,
        params=dict(frozen.params),
        distributions=dict(frozen.distributions),
        system_attrs=dict(frozen.system_attrs),
        history=history,
        model_name=plan.model_name,
        fixed_params=plan.fixed_params,
        space=plan.space,
        settings=plan.settings,
    )


def history_before(study: optuna.Study, number: int) -> tuple[FrozenTrial, ...]:
    """Finished trials numbered below `number`, without their records (pruners need only
    values, intermediate values and system attrs)."""
    trials = study.get_trials(deepcopy=False, states=HISTORY_STATES)
    return tuple(_stripped(t) for t in trials if t.number < number)


def _stripped(trial: FrozenTrial) -> FrozenTrial:
    return FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=trial.value,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs={},
        system_attrs=trial.system_attrs,
        intermediate_values=trial.intermediate_values,
        trial_id=0,
    )


class _LiveStorage(InMemoryStorage):
    """In-memory storage that forwards the live trial's reports to the coordinator."""

    live_trial_id: int | None = None

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        super().set_trial_intermediate_value(trial_id, step, value)
        if trial_id == self.live_trial_id:
            worker_pool.emit(("report", step, value))


def execute_trial(task: TrialTask, split: Any = None) -> TrialOutcome:
    """Run one trial (in a pool worker: `split` None = the pool's shared split)."""
    split = split if split is not None else worker_pool.shared()
    storage = _LiveStorage()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    study = optuna.create_study(
        storage=storage,
        study_name=task.study_name,
        direction="maximize",
        pruner=make_pruner(task.settings),
        sampler=optuna.samplers.RandomSampler(seed=0),  # never asked: params are fixed
    )
    by_number = {t.number: t for t in task.history}
    placeholder = FrozenTrial(
        number=0, state=TrialState.RUNNING, value=None, datetime_start=dt.datetime.now(),
        datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
        intermediate_values={}, trial_id=0,
    )  # fmt: skip
    for number in range(task.number):  # same numbers as the real study (Hyperband uses them)
        storage.create_new_trial(
            study_id_of(study), template_trial=by_number.get(number, placeholder)
        )
    template = FrozenTrial(
        number=task.number, state=TrialState.RUNNING, value=None,
        datetime_start=dt.datetime.now(), datetime_complete=None, params=task.params,
        distributions=task.distributions, user_attrs={}, system_attrs=task.system_attrs,
        intermediate_values={}, trial_id=0,
    )  # fmt: skip
    trial_id = storage.create_new_trial(study_id_of(study), template_trial=template)
    storage.live_trial_id = trial_id
    trial = optuna.Trial(study, trial_id)
    from harness.models import TrainingDivergedError

    value, expected, error = None, None, None
    try:
        value = objective(
            trial,
            split=split,
            model_name=task.model_name,
            fixed_params=task.fixed_params,
            space=task.space,
            progress=False,
            sweep_seed=task.settings.seed,
        )
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except (TrainingDivergedError, TrialFailedError) as exc:
        state, expected = TrialState.FAIL, f"{type(exc).__name__}: {exc}"
    except Exception:
        state, error = TrialState.FAIL, traceback.format_exc()
    frozen = storage.get_trial(trial_id)
    new_system = {
        k: v for k, v in frozen.system_attrs.items() if task.system_attrs.get(k, object()) != v
    }
    return TrialOutcome(
        state=state,
        value=value,
        user_attrs=dict(frozen.user_attrs),
        intermediate_values=dict(frozen.intermediate_values),
        system_attrs=new_system,
        expected_failure=expected,
        error=error,
    )


def report_live(study: optuna.Study, trial: optuna.Trial, message: Any) -> None:
    """Write a worker's live per-epoch report to the real study (coordinator side)."""
    kind, step, value = message
    if kind == "report":
        storage_of(study).set_trial_intermediate_value(trial_id_of(trial), step, value)


def tell_outcome(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome) -> FrozenTrial:
    """Record a worker's outcome on the real study and finish the trial; returns it frozen."""
    storage, trial_id = storage_of(study), trial_id_of(trial)
    reported = storage.get_trial(trial_id).intermediate_values
    for step, value in sorted(outcome.intermediate_values.items()):
        if step not in reported:
            storage.set_trial_intermediate_value(trial_id, step, value)
    for key, value in outcome.user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    for key, value in outcome.system_attrs.items():
        storage.set_trial_system_attr(trial_id, key, value)
    # The grid sampler calls study.stop() after the last grid point, which Optuna allows only
    # inside optimize(); the coordinator checks exhaustion itself, so the flag is moot here.
    with optimize_loop_flag(study):
        if outcome.state == TrialState.COMPLETE:
            study.tell(trial, outcome.value)
        else:
            study.tell(trial, state=outcome.state)
    return storage.get_trial(trial_id)


def fail_trial(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Mark an asked trial FAIL with `reason` (e.g. the sweep was interrupted)."""
    storage_of(study).set_trial_user_attr(trial_id_of(trial), "failure_reason", reason)
    study.tell(trial, state=TrialState.FAIL)
