"""Run a sweep: validate, open the study, enqueue the defaults, run the trials, export.

Default ("pool" coordination): this process owns the study and runs the trial window
(`window.run_coordinator`: trials as jobs on an executor, told in trial-number order).
`sweep.coordination=storage` runs `run_worker` in one or more processes that share only the
storage, as workers on other machines do:

A worker repeats "reap dead trials, count finished trials, run one trial" until the study holds
`n_trials` finished (COMPLETE + PRUNED) trials or its timeout passes. Counting what the study
holds, not what this process ran, is what makes rerunning the same command a resume, and lets
any number of workers share one budget (each may overshoot by the one trial it had running).
Heartbeats live in `heartbeat.py`, what is printed in `logs.py`, the worker plan in `plan.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.errors import (
    UserError,
    interruptible,
    raise_if_terminated,
    signal_zone,
    sigterm_as_interrupt,
)
from harness.outputs import check_study_name, output_dir
from harness.secrets import mask
from harness.sweep import recovery
from harness.sweep.effects import ineffective_params
from harness.sweep.export import export_study
from harness.sweep.failures import check_failures, failure_limit_reached
from harness.sweep.heartbeat import journal_heartbeat, with_heartbeat
from harness.sweep.identity import study_identity
from harness.sweep.logs import (
    budget_text,
    ensure_logging,
    log,
    progress,
    quiet_optuna,
    summarize,
)
from harness.sweep.objective import INTERRUPTED, TrialFailedError, objective
from harness.sweep.plan import FINISHED, WorkerPlan, budget_spent, with_worker_id, worker_seed
from harness.sweep.reserve import SpaceReserve, full_disk, stop_reason
from harness.sweep.shield import InterruptOnce
from harness.sweep.space import SearchSpace, default_trial_params, parse_search_space
from harness.sweep.storage import hide_password, open_storage, resolve_storage_url
from harness.sweep.study import create_or_load_study, make_pruner, make_sampler, study_name_for
from harness.sweep.window import local_executor, run_coordinator
from harness.sweep.workers import run_workers

__all__ = [
    "WorkerPlan",
    "run_coordinator",
    "run_storage_jobs",
    "run_sweep",
    "run_worker",
    "storage_worker_job",
    "with_worker_id",
]


def run_sweep(
    *,
    split: Any,
    dataset_name: str,
    model_name: str,
    model_params: Mapping[str, Any],
    search_space: Mapping[str, Any],
    settings: Any,
    results_dir: Path | str,
    config: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    executor: Any = None,
) -> optuna.Study:
    """Run (or resume) the study of one model on one split and export its records.

    Args:
        split: A `harness.data.Split` (loaded once by the caller).
        dataset_name: Dataset name, used in the derived study name.
        model_name: A registered model (`harness.models.registered_models()`).
        model_params: The model's configuration (`cfg.model`; a "name" key is ignored).
        search_space: Param -> Hydra Optuna Sweeper expression (or plain fixed value).
        settings: A `SweepSettings`.
        results_dir: Where the default SQLite storage and `<study_name>/` exports go.
        config: The composed config, stored as the study's "config" user attr.
        callbacks: Optuna callbacks called after each finished trial, as in
            `study.optimize(callbacks=...)` (e.g. `harness.tracking.make_callbacks`). With
            several workers they are pickled into each worker process.
        executor: Where the trials run (`harness.execution.make_executor`, made with this
            split; the caller closes it). None = a local pool of `settings.n_workers` for this
            call only.

    Returns:
        The study (loaded from its storage; usable after this returns).

    Raises:
        SweepConfigError: Invalid search space, settings or unreachable storage (before any trial).
    """
    ensure_logging()
    space = parse_search_space(search_space, model_name=model_name)
    storage_url = resolve_storage_url(settings, results_dir)
    storage = open_storage(storage_url, settings)
    study_name = settings.study_name or study_name_for(dataset_name, split.fingerprint, model_name)
    check_study_name(study_name, "sweep.study_name" if settings.study_name else "dataset.name")
    fixed = {key: value for key, value in model_params.items() if key != "name"} | space.fixed
    k = int(fixed.get("k", 100))
    for message in ineffective_params(fixed, space.distributions):
        log.warning("warning: %s", message)
    attrs = {
        "model": model_name,
        "dataset": dataset_name,
        "split_fingerprint": split.fingerprint,
        "k": k,
        "n_trials_budget": settings.n_trials,
        "config": mask(dict(config or {})),  # no database password in the study
        "identity": study_identity(
            model_name=model_name,
            split_fingerprint=split.fingerprint,
            fixed_params=fixed,
            distributions=space.distributions,
        ),
    }
    with quiet_optuna():
        study = create_or_load_study(
            storage,
            study_name,
            sampler=make_sampler(settings, space),
            pruner=make_pruner(settings),
            attrs=attrs,
        )
        study.set_metric_names([f"ndcg@{k}"])  # dashboards label the value, not "Objective 0"
    _enqueue_defaults(study, space, model_name, model_params)
    plan = WorkerPlan(
        split, model_name, fixed, space, settings, storage_url, study_name, k, tuple(callbacks)
    )
    log.info("study %s (%s): %s", study_name, hide_password(storage_url), budget_text(settings))
    reserve = SpaceReserve.for_sweep(results_dir, storage_url)
    reserve.make()  # freed on a full disk, to record the stopped trials and the exports
    full = None
    # SIGTERM = Ctrl-C: trials failed with a reason, exports; a second one can't cut that short
    with sigterm_as_interrupt(), InterruptOnce():
        try:
            if settings.coordination == "pool" and executor is not None:
                run_coordinator(plan, study, executor)
            elif settings.coordination == "pool":
                with local_executor(plan) as own:
                    run_coordinator(plan, study, own)
            elif executor is not None and getattr(executor, "cluster", None) is not None:
                run_storage_jobs(plan, study, executor)
            elif settings.worker_layout().n_workers > 1:
                layout = settings.worker_layout()
                plans = [with_worker_id(plan, i) for i in range(layout.n_workers)]
                run_workers(plans, study, run_worker, quiet=settings.quiet, threads=layout.threads)
            else:
                run_worker(plan, study)
        except Exception as error:
            full = full_disk(error)
            if full is None:
                raise
            _stop_on_full_disk(study, full, reserve, settings)
        finally:
            # Also on Ctrl-C or a full disk: the exports then show what the sweep finished.
            try:
                _export(study, output_dir(results_dir, study_name, "sweep.study_name"), full)
            finally:
                reserve.release()  # held only while the sweep runs: no file is left behind
    if full is not None:
        raise full from None  # one line: free space and rerun
    check_failures(study, settings)
    return study


def _stop_on_full_disk(study: optuna.Study, full: UserError, reserve: Any, settings: Any) -> None:
    """Free the space reserve and fail this process's running trials with the reason (their
    parameters enqueued again for the rerun)."""
    freed = reserve.release()
    if not freed:
        log.warning("no space reserve to free: running trials may stay RUNNING until the rerun")
    with contextlib.suppress(Exception):  # the disk may be full again: the rerun reaps them
        recovery.fail_own_trials(study, stop_reason(full), settings.max_retry)


def _export(study: optuna.Study, folder: Path, full: UserError | None) -> None:
    """Write the study's exports; on a full disk, what fits (a failed export keeps the last)."""
    try:
        paths = export_study(study, folder)
    except Exception as error:
        if full is None:
            raise  # a full disk here is one line too (`guarded`)
        detail = (str(error).splitlines() or [type(error).__name__])[0]
        log.warning("exports not written (%s); the rerun writes them", detail)
        return
    log.info("exported %s", ", ".join(str(p) for p in paths.values()))


def run_storage_jobs(plan: WorkerPlan, study: optuna.Study, executor: Any) -> None:
    """`sweep.coordination=storage` on submitit/Slurm: `n_workers` jobs, each a storage worker
    (`run_worker`) against the shared storage (PostgreSQL or a journal file; not SQLite).
    The throughput mode: trials are not reproducible, and dead jobs' trials are failed and
    retried by the others' heartbeat checks.

    Raises:
        SweepConfigError: SQLite storage (several jobs would write one SQLite file).
        RuntimeError: A worker job failed (others are waited for first).
    """
    from harness.sweep.settings import SweepConfigError

    if plan.storage_url.startswith("sqlite"):
        raise SweepConfigError(
            f"sweep.coordination=storage on executor={executor.settings.backend} is refused with "
            f"SQLite storage ({hide_password(plan.storage_url)}): several jobs would write one "
            "SQLite file. Use PostgreSQL (sweep.storage=postgresql://user@host/db) or a journal "
            "file on the shared filesystem (sweep.storage=journal:///shared/path/optuna.log), or "
            "drop sweep.coordination=storage (the default pool coordination is reproducible)."
        )
    n = executor.n_workers
    plans = [dataclasses.replace(with_worker_id(plan, i), split=None) for i in range(n)]
    log.info("submitting %d storage-coordinated worker job(s) on %s", n, executor.describe())
    futures = [executor.submit(storage_worker_job, p) for p in plans]
    errors = []
    for future in futures:
        error = future.exception()
        if error is not None:
            errors.append(str(error).strip().splitlines()[-1])
    if errors:
        raise RuntimeError(
            f"{len(errors)} worker job(s) failed: {errors[0]}; rerun the same command to resume"
        )


def storage_worker_job(plan: WorkerPlan) -> int:
    """A submitit job: `run_worker` on the split read from the cache by fingerprint."""
    from harness.execution import job_split

    return run_worker(dataclasses.replace(plan, split=job_split()))


def run_worker(plan: WorkerPlan, study: optuna.Study | None = None) -> int:
    """Run trials until the study's budget or this worker's timeout is reached.

    Args:
        plan: What to run.
        study: An already opened study (in-process); None = open it from `plan` (spawned worker).

    Returns:
        The number of trials this worker ran.
    """
    settings = plan.settings
    from harness.devices import setup_worker

    device = setup_worker(settings.worker_id, settings.gpus)  # before TensorFlow starts
    log.debug("worker %s trains on %s", settings.worker_id, device)
    if study is None:
        storage = open_storage(plan.storage_url, settings)
        study = optuna.load_study(study_name=plan.study_name, storage=storage)
        study.pruner = make_pruner(settings)
    study.sampler = make_sampler(settings, plan.space, seed=worker_seed(plan, study))
    heartbeat = journal_heartbeat(plan)
    show = not settings.quiet
    func = functools.partial(
        objective,
        split=plan.split,
        model_name=plan.model_name,
        fixed_params=plan.fixed_params,
        space=plan.space,
        progress=show,
        sweep_seed=settings.seed,
    )
    if heartbeat is not None:
        func = with_heartbeat(func, heartbeat)
    func = recovery.owned(func)  # host + pid on the trial: a rerun sees when it died
    func = interruptible(func)  # SIGTERM fails the trial; between trials it waits for a check
    from harness.models import TrainingDivergedError

    catch = (TrainingDivergedError, TrialFailedError)
    summary = functools.partial(summarize, k=plan.k, worker_id=settings.worker_id)
    # Console logging goes through the bar, so summary lines do not tear it.
    bar, redirect = progress(settings.n_trials, plan.study_name, show)
    ran, start = 0, time.monotonic()
    in_loop = signal_zone(raise_at_once=False)
    with bar, redirect, quiet_optuna(), sigterm_as_interrupt(), in_loop:
        while True:
            raise_if_terminated()
            recovery.reap_dead_workers(study, settings.max_retry)
            if heartbeat is not None:
                heartbeat.fail_stale_trials(study)
            finished = len(study.get_trials(deepcopy=False, states=FINISHED))
            bar.n = finished
            bar.refresh()
            if budget_spent(study, settings, finished, time.monotonic() - start):
                break
            if failure_limit_reached(study, settings):
                break  # run_sweep raises after the export
            study.optimize(func, n_trials=1, catch=catch, callbacks=[summary, *plan.callbacks])
            ran += 1
        # RDB: fail (and enqueue again) trials of workers that died meanwhile, waiting for
        # ones whose heartbeat already stopped rather than leaving them RUNNING.
        recovery.settle_stale_trials(study)
    return ran


def _enqueue_defaults(
    study: optuna.Study,
    space: SearchSpace,
    model_name: str,
    model_params: Mapping[str, Any] | None = None,
) -> None:
    """Enqueue the model's defaults as the next trial unless the study already has them.

    The defaults are the composed model config's values (`model_params`: a user's own
    `model/<name>.yaml` included), over the shipped `conf/model/<name>.yaml` for keys it lacks.

    "Has them" = any trial with these params, except ones failed by Ctrl-C: an interrupted
    first run must not lose its baseline. A default that diverged is not tried again.
    """
    if not space.distributions:
        return
    from harness.models.registry import model_defaults

    params = default_trial_params(space, {**model_defaults(model_name), **(model_params or {})})
    if not params:  # no default lies inside the space: nothing to enqueue
        return
    n_interrupted = 0
    for trial in study.get_trials(deepcopy=False):
        tried = trial.params or trial.system_attrs.get("fixed_params", {})
        tried = {name: tried.get(name) for name in params}  # other searched params don't matter
        interrupted = trial.user_attrs.get("failure_reason") == INTERRUPTED
        if tried == params and not (trial.state == TrialState.FAIL and interrupted):
            return
        n_interrupted += tried == params
    # Workers starting together all get here; the storage lets exactly one enqueue.
    recovery.enqueue_once(study, params, claim=f"seed_default:{n_interrupted}")
