"""The trial window of pool coordination: this process owns the study, keeps `batch_size`
asked trials in flight as jobs on an executor (`harness.execution`: the local pool of spawned
workers, submitit's local executor or Slurm) and tells their outcomes back in trial-number order
(`batch.py` explains why that is reproducible). A trial whose worker died, hung or was
cancelled is failed with the reason and its parameters are retried (`sweep.max_retry`); on an
interrupt, finished trials are told and the ones in flight are failed with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.compat.optuna import trial_id_of, unvisited_grid_ids
from harness.errors import raise_if_terminated
from harness.execution import resume
from harness.pool import WorkerLost
from harness.sweep import batch, recovery
from harness.sweep.failures import failure_limit_reached
from harness.sweep.heartbeat import JournalHeartbeat, RdbHeartbeats, journal_heartbeat
from harness.sweep.logs import log, progress, quiet_optuna, summarize
from harness.sweep.objective import INTERRUPTED, LOST
from harness.sweep.plan import FINISHED, WorkerPlan, budget_spent, worker_seed
from harness.sweep.reserve import full_disk, stop_reason
from harness.sweep.retry import retry_callback
from harness.sweep.study import make_sampler


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
    study.sampler = make_sampler(settings, plan.space, seed=worker_seed(plan, study))
    heartbeat = journal_heartbeat(plan)
    show = not settings.quiet
    bar, redirect = progress(settings.n_trials, plan.study_name, show)
    window = _Window(plan, study, executor, heartbeat, bar)
    with bar, redirect, quiet_optuna(), window:
        window.adopt()  # before reaping: a killed coordinator's jobs are waited for
        while True:
            # a SIGTERM whose exception was lost (e.g. raised inside a finalizer) stops the
            # sweep here, within one wait, instead of after the trials in flight
            raise_if_terminated()
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
        self.rdb_beat = RdbHeartbeats(study, [])
        self.slowest_epoch = 0.0

    def __enter__(self) -> _Window:
        return self

    def __exit__(self, kind: Any, error: Any, _tb: Any) -> None:
        if kind is None:
            return
        # Interrupted (or an unexpected error): the trials in flight won't be told normally.
        interrupted = issubclass(kind, KeyboardInterrupt)
        full = None if interrupted else full_disk(error)  # retried; the caller frees space
        reason = INTERRUPTED if interrupted else f"{kind.__name__}: {error}"
        if full is not None:
            reason = stop_reason(full)
        log.warning(
            "stopping (%s): failing the %d trial(s) in flight, keeping the finished ones",
            reason.split(";")[0],
            len(self.inflight) + (self.asked is not None),
        )
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
        stopped = [*self.inflight.values(), *([self.asked] if self.asked is not None else [])]
        for future in list(self.inflight):
            self._stop_beating(future)
        for trial in stopped:  # self.asked: asked, not yet sent to a worker
            with contextlib.suppress(Exception):  # a trial told just before: already finished
                if full is None:
                    batch.fail_trial(self.study, trial, reason)
                else:
                    recovery.fail_and_retry(
                        self.study, trial_id_of(trial), reason, self.plan.settings.max_retry
                    )

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
            or budget_spent(self.study, settings, finished, elapsed)
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
        resume.track(self.study, trial, future)  # its job id: a rerun waits for it
        self._start(future, trial)
        self.asked = None
        self.ran += 1

    def adopt(self) -> None:
        """Wait for the jobs of trials a killed coordinator left running (`resume.reattach`)."""
        for future, trial in resume.reattach(self.study, self.executor):
            self._start(future, trial)

    def _start(self, future: Any, trial: optuna.Trial) -> None:
        future.on_message = functools.partial(batch.report_live, self.study, trial)
        self.inflight[future] = trial
        self.beats[future] = stack = contextlib.ExitStack()
        if self.heartbeat is not None:
            stack.enter_context(self.heartbeat.beating(trial_id_of(trial)))
        self.rdb_beat.trials = list(self.inflight.values())
        self.rdb_beat(force=True)

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
            retry_callback(self.plan.settings.max_retry)(self.study, retry)
        if outcome.expected_failure:
            log.warning("trial %d failed: %s", trial.number, outcome.expected_failure)
        if outcome.error:
            self.errors.append(f"trial {trial.number}:\n{outcome.error}")
        self._scale_worker_timeout(frozen)
        summarize(self.study, frozen, k=self.plan.k, worker_id=self.plan.settings.worker_id)
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


def local_executor(plan: WorkerPlan) -> Any:
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
