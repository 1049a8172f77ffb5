"""A sweep's trials remember their cluster jobs, so a killed coordinator's rerun resumes them.

When a trial's job is submitted, its reference (backend, submitit folder, job id) is written
to the trial as the system attr `harness:job`; when the job is done, where it ran (host,
Slurm node, device) is added. A rerun of the coordinator finds RUNNING trials whose
coordinator process is certainly gone (`harness.sweep.recovery.is_dead`) and whose job it
can reach (`SubmititExecutor.attach`): it takes them over and waits for their jobs. A job
that finished meanwhile is told from the result submitit left in its folder; one still
running is waited for, not resubmitted; one that died meanwhile fails as any lost job does
(failed with Slurm's state, its parameters retried). Trials without a reachable job (the
local pool, or a job killed before its id was recorded) are left to the usual reaping:
failed and retried.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.compat.optuna import storage_of, trial_id_of
from harness.sweep.recovery import OWNER, is_dead, record_owner

log = logging.getLogger("harness.sweep")
JOB = "harness:job"


def track(study: optuna.Study, trial: optuna.Trial, future: Any) -> None:
    """Write `future`'s job to `trial` once it is submitted, and where it ran once done."""
    when_launched = getattr(future, "when_launched", None)
    if when_launched is None:  # not a cluster job (a plain future)
        return
    storage, trial_id = storage_of(study), trial_id_of(trial)

    def launched(job_ref: dict[str, str]) -> None:
        storage.set_trial_system_attr(trial_id, JOB, dict(job_ref))

    def done(future: Any) -> None:
        if future.job_ref is not None and future.placement:
            storage.set_trial_system_attr(trial_id, JOB, {**future.job_ref, **future.placement})

    when_launched(launched)
    future.add_done_callback(done)


def reattach(study: optuna.Study, executor: Any) -> list[tuple[Any, optuna.Trial]]:
    """Take over the RUNNING trials of dead coordinators whose jobs `executor` can reach.

    Returns:
        (future, trial) of each trial taken over, in trial-number order; each trial now
        belongs to this process (`recovery.record_owner`) and its job is tracked.
    """
    attach = getattr(executor, "attach", None)
    if attach is None:
        return []
    taken = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        job_ref = frozen.system_attrs.get(JOB)
        if not job_ref or not is_dead(frozen.system_attrs.get(OWNER)):
            continue
        future = attach(job_ref, label=f"trial {frozen.number}")
        if future is None:
            continue
        trial = optuna.Trial(study, trial_id_of(frozen))
        record_owner(trial)
        track(study, trial, future)
        log.info(
            "trial %d: waiting for its job %s from the previous run (not resubmitted)",
            frozen.number,
            job_ref.get("job_id"),
        )
        taken.append((future, trial))
    return taken
