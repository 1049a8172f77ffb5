"""Heartbeats for journal-file storage, which (unlike Optuna's RDB storage) has none.

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

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from harness.compat.optuna import storage_of, trial_id_of
from harness.sweep.retry import retry_callback

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
