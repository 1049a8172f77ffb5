"""Heartbeats of running trials, so that a trial whose worker died is failed and retried.

RDB storage (SQLite, PostgreSQL) has Optuna's heartbeat: the coordinator beats for the trials
it has in flight (`RdbHeartbeats`); storage workers get it from `Study.optimize`.

Journal-file storage has none; `JournalHeartbeat` is the harness's own:

Each running trial owns a side file `<journal>.heartbeats/<study>/<trial_id>` whose mtime a
daemon thread refreshes every `interval` seconds. Side files rather than trial attrs, because
every attr write would append to the journal forever. Before each trial, a worker fails RUNNING
trials whose side file (or, lacking one, start time) is older than the grace period and
re-enqueues them with Optuna's own `RetryHeartbeatStaleTrialCallback`, exactly what the RDB
heartbeat does. The side files must live on storage every worker sees, like the journal itself.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from harness.compat.optuna import storage_of, trial_id_of
from harness.sweep.plan import WorkerPlan
from harness.sweep.retry import retry_callback
from harness.sweep.storage import is_journal_url, journal_path

log = logging.getLogger(__name__)


class JournalHeartbeat:
    """Heartbeat writer and stale-trial reaper for one study in a journal file.

    Args:
        journal_file: The journal log file of the storage.
        study_name: Study whose trials are tracked.
        interval: Seconds between heartbeats.
        grace_period: Seconds of silence after which a RUNNING trial is declared dead.
        max_retry: How often one configuration is re-run after dying (None = unlimited).
        clock: The current time in seconds since the epoch, as file mtimes count it (tests
            pass a clock they control).
    """

    def __init__(
        self,
        journal_file: Path,
        study_name: str,
        *,
        interval: float,
        grace_period: float,
        max_retry: int | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = journal_file.with_name(journal_file.name + ".heartbeats") / study_name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        self.grace_period = grace_period
        self.retry = retry_callback(max_retry)
        self.clock = clock

    @contextlib.contextmanager
    def beating(self, trial_id: int) -> Iterator[None]:
        """Keep the trial's heartbeat fresh while the block runs; remove it afterwards."""
        path = self.directory / str(trial_id)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.interval):
                with contextlib.suppress(OSError):
                    path.touch()

        path.touch()
        thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            path.unlink(missing_ok=True)

    def fail_stale_trials(self, study: optuna.Study) -> list[int]:
        """Fail RUNNING trials with a stale heartbeat and enqueue their retries.

        Several workers may reap at once; the journal replay lets exactly one of them win the
        state change (the others get UpdateFinishedTrialError), and only the winner re-enqueues.

        Returns:
            Numbers of the trials this call failed.
        """
        now = self.clock()
        failed = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            path = self.directory / str(trial_id_of(trial))
            try:
                last = path.stat().st_mtime
            except FileNotFoundError:
                # A worker killed between starting the trial and its first beat.
                start = trial.datetime_start
                last = start.timestamp() if start is not None else now
            silent = now - last
            if silent <= self.grace_period:
                continue
            reason = (
                f"worker died: no heartbeat for {silent:.0f} s (grace period "
                f"{self.grace_period:.0f} s); the trial is re-run"
            )
            storage, trial_id = storage_of(study), trial_id_of(trial)
            try:
                storage.set_trial_user_attr(trial_id, "failure_reason", reason)
                if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                    continue
            except UpdateFinishedTrialError:
                continue
            path.unlink(missing_ok=True)
            failed.append(trial.number)
            log.warning("trial %d: %s", trial.number, reason)
            dead = copy.deepcopy(storage.get_trial(trial_id))
            # The retry inherits the user attrs; the reason belongs to the dead trial only.
            dead.user_attrs = {k: v for k, v in dead.user_attrs.items() if k != "failure_reason"}
            self.retry(study, dead)
        return failed


def journal_heartbeat(plan: WorkerPlan) -> JournalHeartbeat | None:
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


def with_heartbeat(func: Callable[[optuna.Trial], float], heartbeat: JournalHeartbeat) -> Any:
    """`func` (an objective) beating for its trial while it runs."""

    def beating_objective(trial: optuna.Trial) -> float:
        with heartbeat.beating(trial_id_of(trial)):
            return func(trial)

    return beating_objective


class RdbHeartbeats:
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
