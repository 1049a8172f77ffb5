"""Run a sweep: validate, open the study, enqueue the defaults, run worker(s), export.

Default ("pool" coordination): this process owns the study and runs `run_coordinator`: it keeps
`batch_size` asked trials in flight as jobs on an executor (`harness.execution`: the local pool of
spawned workers, submitit's local executor or Slurm) and tells the results back in trial-number
order (`batch.py` explains why that is reproducible). A trial whose worker died, hung or was
cancelled is failed with the reason and its parameters are retried (`sweep.max_retry`). `sweep.coordination=storage` runs `run_worker` in one or more processes
that share only the storage, as workers on other machines do:

A worker repeats "reap dead trials, count finished trials, run one trial" until the study holds
`n_trials` finished (COMPLETE + PRUNED) trials or its timeout passes. Counting what the study
holds, not what this process ran, is what makes rerunning the same command a resume, and lets
any number of workers share one budget (each may overshoot by the one trial it had running).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from harness.compat.optuna import storage_of, trial_id_of, unvisited_grid_ids
from harness.errors import (
    interruptible,
    raise_if_terminated,
    signal_zone,
    sigterm_as_interrupt,
)
from harness.outputs import check_study_name, output_dir
from harness.pool import WorkerLost
from harness.secrets import mask
from harness.sweep import batch, recovery
from harness.sweep.effects import ineffective_params
from harness.sweep.export import export_study
from harness.sweep.failures import check_failures, failure_limit_reached
from harness.sweep.heartbeat import JournalHeartbeat
from harness.sweep.identity import study_identity
from harness.sweep.objective import INTERRUPTED, LOST, TrialFailedError, objective
from harness.sweep.space import SearchSpace, default_trial_params, parse_search_space
from harness.sweep.study import (
    create_or_load_study,
    is_journal_url,
    journal_path,
    make_pruner,
    make_sampler,
    open_storage,
    resolve_storage_url,
    study_name_for,
)
from harness.sweep.workers import run_workers

log = logging.getLogger("harness.sweep")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker process needs; picklable, so spawned workers get it as is."""

    split: Any
    model_name: str
    fixed_params: dict[str, Any]
    space: SearchSpace
    settings: Any  # SweepSettings
    storage_url: str
    study_name: str
    k: int
    callbacks: tuple[Callable[[optuna.Study, FrozenTrial], None], ...] = ()


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
    _ensure_logging()
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
    with _quiet_optuna():
        study = create_or_load_study(
            storage,
            study_name,
            sampler=make_sampler(settings, space),
            pruner=make_pruner(settings),
            attrs=attrs,
        )
        study.set_metric_names([f"ndcg@{k}"])  # dashboards label the value, not "Objective 0"
    _enqueue_defaults(study, space, model_name)
    plan = WorkerPlan(
        split, model_name, fixed, space, settings, storage_url, study_name, k, tuple(callbacks)
    )
    log.info("study %s (%s): %s", study_name, _safe_url(storage_url), _budget_text(settings))
    try:
        with sigterm_as_interrupt():  # SIGTERM = Ctrl-C: trial failed with a reason, exports
            if settings.coordination == "pool" and executor is not None:
                run_coordinator(plan, study, executor)
            elif settings.coordination == "pool":
                with _executor_for(plan) as own:
                    run_coordinator(plan, study, own)
            elif executor is not None and getattr(executor, "cluster", None) is not None:
                run_storage_jobs(plan, study, executor)
            elif settings.worker_layout().n_workers > 1:
                layout = settings.worker_layout()
                plans = [with_worker_id(plan, i) for i in range(layout.n_workers)]
                run_workers(plans, study, run_worker, quiet=settings.quiet, threads=layout.threads)
            else:
                run_worker(plan, study)
    finally:
        # Also on Ctrl-C: the exports then show what the interrupted sweep finished.
        paths = export_study(study, output_dir(results_dir, study_name, "sweep.study_name"))
        log.info("exported %s", ", ".join(str(p) for p in paths.values()))
    check_failures(study, settings)
    return study


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
            f"SQLite storage ({_safe_url(plan.storage_url)}): several jobs would write one "
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
    study.sampler = make_sampler(settings, plan.space, seed=_worker_seed(plan, study))
    heartbeat = _journal_heartbeat(plan)
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
        func = _with_heartbeat(func, heartbeat)
    func = recovery.owned(func)  # host + pid on the trial: a rerun sees when it died
    func = interruptible(func)  # SIGTERM fails the trial; between trials it waits for a check
    from harness.models import TrainingDivergedError

    catch = (TrainingDivergedError, TrialFailedError)
    summary = functools.partial(_summarize, k=plan.k, worker_id=settings.worker_id)
    # disable=None: tqdm draws no bar when stderr is not a terminal (logs keep plain lines)
    bar = tqdm(
        total=settings.n_trials,
        desc=plan.study_name,
        unit="trial",
        disable=None if show else True,
    )
    # Route console logging through tqdm so summary lines do not tear the bars; only the
    # logger that owns the console handler (root under Hydra, else ours) may be redirected,
    # or a propagated record would be printed twice.
    console = log if log.handlers else logging.getLogger()
    redirect = logging_redirect_tqdm(loggers=[console]) if show else contextlib.nullcontext()
    ran, start = 0, time.monotonic()
    in_loop = signal_zone(raise_at_once=False)
    with bar, redirect, _quiet_optuna(), sigterm_as_interrupt(), in_loop:
        while True:
            raise_if_terminated()
            recovery.reap_dead_workers(study, settings.max_retry)
            if heartbeat is not None:
                heartbeat.fail_stale_trials(study)
            finished = len(study.get_trials(deepcopy=False, states=FINISHED))
            bar.n = finished
            bar.refresh()
            if _budget_spent(study, settings, finished, time.monotonic() - start):
                break
            if failure_limit_reached(study, settings):
                break  # run_sweep raises after the export
            study.optimize(func, n_trials=1, catch=catch, callbacks=[summary, *plan.callbacks])
            ran += 1
        # RDB: fail (and enqueue again) trials of workers that died meanwhile, waiting for
        # ones whose heartbeat already stopped rather than leaving them RUNNING.
        recovery.settle_stale_trials(study)
    return ran


def run_coordinator(plan: WorkerPlan, study: optuna.Study, executor: Any) -> int:
    """Run trials on `executor` until the study's budget or the timeout is reached.

    A window of `batch_size` trials is in flight: trial n is asked right after trial
    n - batch_size is told, and outcomes are told in trial-number order, so what the sampler
    and the pruner see when a trial starts depends only on trial numbers, not on timing
    (`batch.py`). Trials other processes are running count against the budget. An expected
    failure (diverged, no finite NDCG) is recorded and the sweep goes on; any other exception
    in a trial stops asking, and is raised once the trials in flight are told. A trial whose
    worker was lost (died, hung past `sweep.worker_timeout`, cancelled) is failed with the
    reason and its parameters enqueued again (up to `sweep.max_retry` times). On Ctrl-C the
    trials already finished are told, and the ones in flight are failed as interrupted.

    Returns:
        The number of trials this coordinator ran.
    """
    settings = plan.settings
    key = getattr(executor, "key", None)
    if key is not None and key != plan.split.fingerprint:
        raise ValueError(
            f"the executor's jobs see split {key[:12]}, the sweep's is {plan.split.fingerprint[:12]}"
        )
    study.sampler = make_sampler(settings, plan.space, seed=_worker_seed(plan, study))
    heartbeat = _journal_heartbeat(plan)
    show = not settings.quiet
    # disable=None: no bar when stderr is not a terminal (logs keep plain lines)
    bar = tqdm(
        total=settings.n_trials, desc=plan.study_name, unit="trial", disable=None if show else True
    )
    console = log if log.handlers else logging.getLogger()
    redirect = logging_redirect_tqdm(loggers=[console]) if show else contextlib.nullcontext()
    window = _Window(plan, study, executor, heartbeat, bar)
    with bar, redirect, _quiet_optuna(), window:
        while True:
            window.reap()
            window.fill()
            if not window.inflight:
                if window.done():
                    break
                time.sleep(settings.heartbeat_interval)  # the rest of the budget runs elsewhere
                continue
            window.wait()
        window.raise_errors()
    return window.ran


def _journal_heartbeat(plan: WorkerPlan) -> JournalHeartbeat | None:
    """The harness's own heartbeat for a journal storage (it has none); None otherwise."""
    if not is_journal_url(plan.storage_url):
        return None
    settings = plan.settings
    return JournalHeartbeat(
        journal_path(plan.storage_url),
        plan.study_name,
        interval=settings.heartbeat_interval,
        grace_period=settings.effective_grace_period,
        max_retry=settings.max_retry,
    )


class _Window:
    """The trials in flight of `run_coordinator` (see there)."""

    def __init__(
        self,
        plan: WorkerPlan,
        study: optuna.Study,
        executor: Any,
        heartbeat: JournalHeartbeat | None,
        bar: Any,
    ) -> None:
        self.plan, self.study, self.executor, self.heartbeat, self.bar = (
            plan,
            study,
            executor,
            heartbeat,
            bar,
        )
        self.size = plan.settings.window(executor.n_workers)
        self.inflight: dict[Any, optuna.Trial] = {}  # future -> trial, in ask (= number) order
        self.asked: optuna.Trial | None = None  # between study.ask and inflight
        self.outcomes: dict[Any, batch.TrialOutcome] = {}  # finished, not yet told
        self.beats: dict[Any, contextlib.ExitStack] = {}
        self.errors: list[str] = []
        self.start, self.ran, self.last_reap = time.monotonic(), 0, -float("inf")
        self.rdb_beat = _Heartbeats(study, [])
        self.slowest_epoch = 0.0

    def __enter__(self) -> _Window:
        return self

    def __exit__(self, kind: Any, error: Any, _tb: Any) -> None:
        if kind is None:
            return
        # Interrupted (or an unexpected error): the trials in flight won't be told normally.
        reason = INTERRUPTED if issubclass(kind, KeyboardInterrupt) else f"{kind.__name__}: {error}"
        with contextlib.suppress(BaseException):  # outcomes that arrived meanwhile
            self._collect(0)
        # Finished trials are told (in number order), never discarded with the interrupt.
        for future, trial in list(self.inflight.items()):
            if future in self.outcomes:
                with contextlib.suppress(Exception):
                    self._tell(future, trial, self.outcomes.pop(future))
                    del self.inflight[future]
        cancel = getattr(getattr(self.executor, "settings", None), "cancel_on_exit", True)
        with contextlib.suppress(Exception):
            self.executor.close(cancel=cancel)  # their workers/jobs are abandoned
        for future, trial in list(self.inflight.items()):
            with contextlib.suppress(Exception):  # a trial told just before: already finished
                batch.fail_trial(self.study, trial, reason)
            self._stop_beating(future)
        if self.asked is not None:  # asked, not yet sent to a worker
            with contextlib.suppress(Exception):
                batch.fail_trial(self.study, self.asked, reason)

    def _counts(self) -> tuple[int, int]:
        trials = self.study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)  # ours included
        return finished, running

    def done(self) -> bool:
        """The budget is spent, a trial raised or too many failed: ask nothing more."""
        finished, _ = self._counts()
        self.bar.n = finished
        self.bar.refresh()
        elapsed = time.monotonic() - self.start
        settings = self.plan.settings
        return (
            bool(self.errors)
            or _budget_spent(self.study, settings, finished, elapsed)
            or failure_limit_reached(self.study, settings)  # run_sweep raises after the export
        )

    def fill(self) -> None:
        """Ask trials until the window is full or the budget allows no more."""
        settings = self.plan.settings
        while len(self.inflight) < self.size and not self.done():
            finished, running = self._counts()
            if settings.n_trials is not None and finished + running >= settings.n_trials:
                return
            sampler = self.study.sampler
            if isinstance(sampler, optuna.samplers.GridSampler):  # no repeated grid points
                if not unvisited_grid_ids(sampler, self.study):
                    return
            self._ask()

    def _ask(self) -> None:
        with warnings.catch_warnings():
            # Optuna warns that storage heartbeats expect Study.optimize: we beat ourselves.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask(dict(self.plan.space.distributions))
        self.asked = trial  # failed on an interrupt until it is in flight
        recovery.record_owner(trial)  # this process: a rerun on this host sees when it died
        history = batch.history_before(self.study, trial.number)
        task = batch.make_task(self.study, trial, history, self.plan)
        future = self.executor.submit(batch.execute_trial, task)
        future.on_message = functools.partial(batch.report_live, self.study, trial)
        self.inflight[future] = trial
        self.asked = None
        self.beats[future] = stack = contextlib.ExitStack()
        if self.heartbeat is not None:
            stack.enter_context(self.heartbeat.beating(trial_id_of(trial)))
        self.rdb_beat.trials = list(self.inflight.values())
        self.rdb_beat(force=True)
        self.ran += 1

    def _collect(self, timeout: float | None) -> None:
        waiting = [f for f in self.inflight if f not in self.outcomes]
        if not waiting:
            return
        for future in self.executor.wait(waiting, timeout):
            error = future.exception()
            if error is None:
                self.outcomes[future] = future.result()
            elif isinstance(error, WorkerLost):  # died, hung, cancelled: retried
                reason = f"{LOST}: {error.reason}"
                self.outcomes[future] = batch.TrialOutcome(
                    TrialState.FAIL, None, {"failure_reason": reason}, {}, lost=reason
                )
            else:  # execute_trial itself raised
                self.outcomes[future] = batch.TrialOutcome(
                    TrialState.FAIL, None, {}, {}, error=str(error)
                )

    def wait(self) -> None:
        """Wait for outcomes; tell them in number order, refilling after each tell."""
        self._collect(self.plan.settings.heartbeat_interval)
        while self.inflight:
            future = next(iter(self.inflight))
            if future not in self.outcomes:
                break
            # in flight until told: a Ctrl-C/SIGTERM during the tell still fails the trial
            self._tell(future, self.inflight[future], self.outcomes.pop(future))
            del self.inflight[future]
            self.fill()
        self.rdb_beat.trials = list(self.inflight.values())
        self.rdb_beat()

    def _tell(self, future: Any, trial: optuna.Trial, outcome: batch.TrialOutcome) -> None:
        if outcome.error and not outcome.user_attrs:
            outcome.user_attrs["failure_reason"] = outcome.error.strip().splitlines()[-1]
        frozen = batch.tell_outcome(self.study, trial, outcome)
        self._stop_beating(future)
        if outcome.lost:
            log.warning("trial %d failed: %s", trial.number, outcome.lost)
            retry = copy.deepcopy(frozen)
            retry.user_attrs = {}
            from harness.sweep.study import retry_callback

            retry_callback(self.plan.settings.max_retry)(self.study, retry)
        if outcome.expected_failure:
            log.warning("trial %d failed: %s", trial.number, outcome.expected_failure)
        if outcome.error:
            self.errors.append(f"trial {trial.number}:\n{outcome.error}")
        self._scale_worker_timeout(frozen)
        _summarize(self.study, frozen, k=self.plan.k, worker_id=self.plan.settings.worker_id)
        for callback in self.plan.callbacks:  # as study.optimize would, in trial order
            callback(self.study, frozen)

    def _scale_worker_timeout(self, trial: FrozenTrial) -> None:
        """Keep the silence limit of local workers above 10 x the slowest epoch seen."""
        epochs = trial.user_attrs.get("epochs_run") or 0
        seconds = trial.user_attrs.get("wall_seconds") or 0.0
        if not epochs or not hasattr(self.executor, "set_worker_timeout"):
            return
        self.slowest_epoch = max(self.slowest_epoch, seconds / epochs)
        limit = self.plan.settings.worker_timeout
        if limit is not None and 10 * self.slowest_epoch > limit:
            self.executor.set_worker_timeout(10 * self.slowest_epoch)

    def _stop_beating(self, future: Any) -> None:
        stack = self.beats.pop(future, None)
        if stack is not None:
            stack.close()

    def reap(self) -> None:
        """Fail the trials of dead processes (owner gone, RDB heartbeats, journal side files)."""
        if time.monotonic() - self.last_reap < self.plan.settings.heartbeat_interval / 2:
            return
        self.last_reap = time.monotonic()
        # certainly dead (this host, process gone): failed and retried at once, any grace period
        recovery.reap_dead_workers(self.study, self.plan.settings.max_retry)
        if self.heartbeat is not None:
            self.heartbeat.fail_stale_trials(self.study)
        else:
            optuna.storages.fail_stale_trials(self.study)

    def raise_errors(self) -> None:
        if self.errors:
            raise RuntimeError("trial(s) raised in a worker:\n" + "\n".join(self.errors))


class _Heartbeats:
    """Heartbeats of the trials in flight on an RDB storage, at most about once per interval
    (journal files beat through `JournalHeartbeat`; other storages have none)."""

    def __init__(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        self.storage, self.trials, self.last = storage_of(study), trials, -float("inf")
        self.interval = getattr(self.storage, "get_heartbeat_interval", lambda: None)()

    def __call__(self, force: bool = False) -> None:
        if self.interval is None:
            return
        if not force and time.monotonic() - self.last < self.interval / 2:
            return
        for trial in self.trials:
            self.storage.record_heartbeat(trial_id_of(trial))
        self.last = time.monotonic()


def _executor_for(plan: WorkerPlan) -> Any:
    """A local pool of `sweep.n_workers` for this sweep only (library calls without one)."""
    from harness.execution import ExecutorSettings, make_executor

    settings = plan.settings
    executor_settings = ExecutorSettings(
        n_workers=settings.n_workers,
        recycle_after=settings.recycle_after,
        gpus=settings.gpus,
        worker_timeout=settings.worker_timeout,
    )
    return make_executor(executor_settings, plan.split)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    # Our one-line summary per trial replaces Optuna's INFO line; its warnings (a failed
    # trial's traceback) still show. Experimental-API warnings are noise for users.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(min(max(verbosity, optuna.logging.WARNING), optuna.logging.ERROR))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _budget_spent(study: optuna.Study, settings: Any, finished: int, elapsed: float) -> bool:
    if settings.n_trials is not None and finished >= settings.n_trials:
        return True
    if settings.timeout is not None and elapsed >= settings.timeout:
        return True
    sampler = study.sampler
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)


def _enqueue_defaults(study: optuna.Study, space: SearchSpace, model_name: str) -> None:
    """Enqueue the model's seed defaults as the next trial unless the study already has them.

    "Has them" = any trial with these params, except ones failed by Ctrl-C: an interrupted
    first run must not lose its baseline. A default that diverged is not tried again.
    """
    if not space.distributions:
        return
    from harness.models.registry import model_defaults

    params = default_trial_params(space, model_defaults(model_name))
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


def _worker_seed(plan: WorkerPlan, study: optuna.Study) -> int:
    """Sampler seed: the configured seed, shifted so that no two workers and no resumed run
    replay the random draws already in the study (sampler state is not stored)."""
    seed = plan.settings.seed + len(study.get_trials(deepcopy=False))
    worker_id = plan.settings.worker_id
    if worker_id is not None:
        seed += 7919 * (worker_id + 1)
    elif plan.storage_url.startswith(("postgresql", "mysql")):
        # Separately started workers (other machines) share settings; the pid tells them apart.
        seed += 7919 * os.getpid()
    return seed % (2**32)


def _with_heartbeat(func: Callable[[optuna.Trial], float], heartbeat: JournalHeartbeat) -> Any:
    def beating_objective(trial: optuna.Trial) -> float:
        with heartbeat.beating(trial_id_of(trial)):
            return func(trial)

    return beating_objective


def _summarize(study: optuna.Study, trial: FrozenTrial, *, k: int, worker_id: int | None) -> None:
    """One line per finished trial: number, state, best NDCG, epochs, time, params."""
    values = [v for v in trial.intermediate_values.values() if v == v]
    best = trial.value if trial.value is not None else (max(values) if values else float("nan"))
    attrs = trial.user_attrs
    params = ", ".join(f"{name}={_short(value)}" for name, value in trial.params.items())
    prefix = f"[worker {worker_id}] " if worker_id is not None else ""
    line = (
        f"{prefix}trial {trial.number:>3} {trial.state.name:<8} ndcg@{k}={best:.4f} "
        f"epochs={attrs.get('epochs_run', '?')} {attrs.get('wall_seconds', 0.0):.1f}s  {params}"
    )
    if trial.state == TrialState.FAIL:
        line += f"  reason: {attrs.get('failure_reason', 'unknown')}"
    log.info(line)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _budget_text(settings: Any) -> str:
    parts = [f"n_trials={settings.n_trials}"] if settings.n_trials is not None else []
    if settings.timeout is not None:
        parts.append(f"timeout={settings.timeout}s")
    return ", ".join(parts + [f"sampler={settings.sampler}", f"pruner={settings.pruner}"])


def _safe_url(url: str) -> str:
    from harness.sweep.study import _hide_password

    return _hide_password(url)


def _ensure_logging() -> None:
    # Library callers without logging config would otherwise never see the trial summaries.
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False  # no second copy should the caller configure logging later
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)


def with_worker_id(plan: WorkerPlan, worker_id: int) -> WorkerPlan:
    """The plan for spawned worker `worker_id`: one process, no bars (the parent has one)."""
    settings = plan.settings.replace(worker_id=worker_id, n_workers=1, quiet=True)
    return dataclasses.replace(plan, settings=settings)
