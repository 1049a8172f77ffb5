"""The retry of a dead worker's trial: Optuna's `RetryHeartbeatStaleTrialCallback`, made once.

Shared by the storage factory (`study.open_storage`: RDB heartbeats), the journal heartbeat
(`heartbeat.JournalHeartbeat`) and the reaper of dead local workers (`recovery`), so a trial
failed by any of them is re-enqueued the same way (same parameters, `failed_trial` and
`retry_history` system attrs, at most `max_retry` times).
"""

from __future__ import annotations

import warnings

import optuna


def retry_callback(max_retry: int | None) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Optuna's re-enqueue-the-dead-trial callback (experimental API; warning silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
