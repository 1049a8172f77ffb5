"""Bring interrupted sweeps back whole: dead workers' trials, the seed default, torn journals.

- Each trial records its worker (host, boot id, pid, process start time) as a system attr
  when it starts. A RUNNING trial whose worker ran on this machine and no longer exists is
  certainly dead: `reap_dead_workers` fails it with a reason and enqueues its parameters
  again at once, whatever the heartbeat grace period (heartbeats still cover other machines).
  `fail_own_trials` does the same for this process's own trials (a sweep stopped by a full
  disk).
- `enqueue_once` enqueues the seed default under a claim that the storage grants to exactly
  one worker (a unique row in RDB storages, a file lock around journal storages), so many
  workers starting together evaluate the default once.
- `repair_journal` cuts a torn last line (a worker killed mid-write) off a journal file,
  keeping the cut bytes in a side file, before Optuna reads it.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from harness.compat.optuna import (
    journal_file_lock,
    journal_file_path,
    rdb_backend,
    rdb_models,
    storage_of,
    study_id_of,
    trial_id_of,
)
from harness.outputs import write_bytes
from harness.sweep.objective import INTERRUPTED
from harness.sweep.retry import retry_callback

log = logging.getLogger("harness.sweep")
OWNER = "harness:worker"
CLAIM = "harness:claim:"


# --- who runs a trial ----------------------------------------------------------------------


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def _start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks after boot), to detect a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def this_worker() -> dict[str, Any]:
    """Identity of the current process: host, boot id, pid and start time."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pid": pid,
        "start": _start_ticks(pid),
    }


def is_dead(owner: Mapping[str, Any] | None) -> bool:
    """True only when ``owner`` certainly no longer runs: same host and boot, pid gone (or
    reused by a younger process). Owners on other machines are never declared dead here."""
    if not owner or owner.get("host") != socket.gethostname() or owner.get("boot") != _boot_id():
        return False
    pid = int(owner.get("pid", -1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False
    started = owner.get("start")
    return started is not None and _start_ticks(pid) not in (None, started)


def record_owner(trial: optuna.Trial) -> None:
    """Write this process as the trial's worker (call as the trial starts)."""
    trial.storage.set_trial_system_attr(trial_id_of(trial), OWNER, this_worker())


def owned(func: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
    """``func`` that first records which process runs the trial, and records an interrupt
    as the failure reason if the objective did not get to."""

    def owned_objective(trial: optuna.Trial) -> float:
        try:
            record_owner(trial)
            return func(trial)
        except KeyboardInterrupt:
            # Ctrl-C/SIGTERM before the objective could record why (e.g. while suggesting)
            with contextlib.suppress(Exception):
                if "failure_reason" not in trial.user_attrs:
                    trial.set_user_attr("failure_reason", INTERRUPTED)
            raise

    return owned_objective


def reap_dead_workers(study: optuna.Study, max_retry: int | None) -> list[int]:
    """Fail RUNNING trials whose worker process is certainly gone; enqueue their retries.

    Several workers may reap at once: the storage lets one of them change the state (the
    others get UpdateFinishedTrialError), and only that one enqueues the retry.

    Returns:
        Numbers of the trials this call failed.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.system_attrs.get(OWNER)
        if not is_dead(owner):
            continue
        reason = (
            f"worker died: process {owner['pid']} on {owner['host']} is gone; the trial is re-run"
        )
        if fail_and_retry(study, trial_id_of(trial), reason, max_retry):
            failed.append(trial.number)
            log.warning("trial %d: %s", trial.number, reason)
    return failed


def fail_own_trials(study: optuna.Study, reason: str, max_retry: int | None) -> list[int]:
    """Fail the RUNNING trials this process runs or coordinates, with `reason`; enqueue
    their retries (a sweep stopped by its environment, e.g. a full disk).

    Returns:
        Numbers of the trials this call failed.
    """
    me = this_worker()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.system_attrs.get(OWNER) or {}
        if (owner.get("host"), owner.get("pid")) != (me["host"], me["pid"]):
            continue
        if fail_and_retry(study, trial_id_of(trial), reason, max_retry):
            failed.append(trial.number)
            log.warning("trial %d failed: %s", trial.number, reason)
    return failed


def fail_and_retry(study: optuna.Study, trial_id: int, reason: str, max_retry: int | None) -> bool:
    """Fail a RUNNING trial with `reason` and enqueue its parameters again (at most
    `max_retry` times). False if another process finished or failed it first."""
    storage = storage_of(study)
    try:
        storage.set_trial_user_attr(trial_id, "failure_reason", reason)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    dead = copy.deepcopy(storage.get_trial(trial_id))
    dead.user_attrs = {k: v for k, v in dead.user_attrs.items() if k != "failure_reason"}
    retry_callback(max_retry)(study, dead)
    return True


def heartbeat_ages(study: optuna.Study) -> dict[int, float]:
    """Seconds since the last heartbeat of each RUNNING trial that has one (RDB storages with
    heartbeats; empty otherwise), by trial number, measured by the database's clock."""
    rdb = rdb_backend(storage_of(study))
    if not isinstance(rdb, optuna.storages.RDBStorage) or rdb.heartbeat_interval is None:
        return {}
    import sqlalchemy

    models = rdb_models()

    session = rdb.scoped_session()
    try:
        now = session.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        rows = (
            session.query(models.TrialModel.number, models.TrialHeartbeatModel.heartbeat)
            .join(models.TrialHeartbeatModel)
            .filter(models.TrialModel.study_id == study_id_of(study))
            .filter(models.TrialModel.state == TrialState.RUNNING)
            .all()
        )
    finally:
        session.close()
    now = now.replace(tzinfo=None)
    return {number: (now - beat.replace(tzinfo=None)).total_seconds() for number, beat in rows}


def settle_stale_trials(study: optuna.Study, *, poll: float | None = None) -> list[int]:
    """Before a worker exits: wait for RUNNING trials whose heartbeat already stopped.

    A trial silent for over 1.5 heartbeat intervals most likely lost its worker (on another
    machine: a local one is caught by `reap_dead_workers`). Rather than leave it RUNNING
    until some later run, wait until it beats again, finishes, or passes the grace period,
    when Optuna fails it and enqueues its retry. Waits at most the grace period.

    Returns:
        Numbers of the trials failed here.
    """
    rdb = rdb_backend(storage_of(study))
    interval = getattr(rdb, "heartbeat_interval", None)
    if not isinstance(rdb, optuna.storages.RDBStorage) or interval is None:
        return []
    grace = rdb.grace_period if rdb.grace_period is not None else 2 * interval
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    deadline = time.monotonic() + grace + 2 * interval + 1  # clocks may count whole seconds
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        silent = [n for n, age in heartbeat_ages(study).items() if age > 1.5 * interval]
        if not silent or time.monotonic() > deadline:
            break
        log.info("waiting up to %.0f s for silent trial(s) %s to be declared dead", grace, silent)
        time.sleep(poll or interval)
    still = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return sorted(running - still - _finished(study))


def _finished(study: optuna.Study) -> set[int]:
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return {t.number for t in study.get_trials(deepcopy=False, states=states)}


# --- exactly-once enqueue ------------------------------------------------------------------


def enqueue_once(study: optuna.Study, params: dict[str, Any], claim: str) -> bool:
    """Enqueue ``params`` unless another worker already claimed ``claim`` in this study.

    The claim is a study system attr ``harness:claim:<claim>`` created atomically: in RDB
    storages by inserting the attr row (its (study, key) unique constraint lets exactly one
    insert commit); in journal storages under an exclusive lock file next to the journal.

    Returns:
        True if this call won the claim and enqueued.
    """
    key = CLAIM + claim
    value = {**this_worker(), "time": time.time()}
    storage, study_id = storage_of(study), study_id_of(study)
    backend = rdb_backend(storage)
    if isinstance(backend, optuna.storages.RDBStorage):
        if not _insert_study_attr(backend, study_id, key, value):
            return False
        study.enqueue_trial(params, skip_if_exists=False)
        return True
    with _journal_lock(backend):
        if key in storage.get_study_system_attrs(study_id):
            return False
        storage.set_study_system_attr(study_id, key, value)
        study.enqueue_trial(params, skip_if_exists=False)
    return True


def _insert_study_attr(
    rdb: optuna.storages.RDBStorage, study_id: int, key: str, value: Any
) -> bool:
    import sqlalchemy.exc

    models = rdb_models()
    session = rdb.scoped_session()
    try:
        session.add(
            models.StudySystemAttributeModel(
                study_id=study_id, key=key, value_json=json.dumps(value)
            )
        )
        session.commit()
        return True
    except sqlalchemy.exc.IntegrityError:
        session.rollback()
        return False
    finally:
        session.close()


@contextlib.contextmanager
def _journal_lock(backend: Any) -> Iterator[None]:
    """An exclusive flock beside a journal file (nothing to lock for in-memory storages)."""
    path = journal_file_path(backend)
    if path is None:
        yield
        return
    with open(f"{path}.claims.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- torn journal lines ----------------------------------------------------------------------


def repair_journal(path: Path) -> bool:
    """Repair a journal file torn by a crash, under Optuna's own journal lock.

    Two shapes: a last line without its newline (the writer died mid-line) is cut off; a line
    that does not parse because a later write was appended to a torn one is replaced by the
    complete log record it ends with. Cut bytes are appended to ``<journal>.torn`` and a
    warning is logged.

    Returns:
        True if the file was changed.
    """
    if not path.exists() or path.stat().st_size == 0:
        return False
    if not _looks_torn(path):
        return False
    with journal_file_lock(str(path)):
        data = path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # bytes after the last newline: empty unless torn
        kept, cut = [], [tail] if tail else []
        for line in lines:
            fixed = _parse_or_salvage(line)
            if fixed is None:
                cut.append(line)
                continue
            if fixed != line:
                cut.append(line[: len(line) - len(fixed)])
            kept.append(fixed)
        if not cut:
            return False
        with open(path.with_name(path.name + ".torn"), "ab") as side:
            side.write(b"\n".join(cut) + b"\n")
        write_bytes(path, b"".join(line + b"\n" for line in kept))
    log.warning(
        "journal %s had %d torn line(s) from a killed writer; repaired (cut bytes kept in %s)",
        path,
        len(cut),
        path.name + ".torn",
    )
    return True


def _looks_torn(path: Path) -> bool:
    """Cheap check: the file must end with a newline and every line must parse."""
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) != b"\n":
            return True
        handle.seek(0)
        for line in handle:
            try:
                json.loads(line)
            except ValueError:
                return True
    return False


def _parse_or_salvage(line: bytes) -> bytes | None:
    """``line`` if it is one JSON record, else the longest complete record it ends with."""
    try:
        json.loads(line)
        return line
    except ValueError:
        pass
    start = line.find(b'{"op_code"', 1)
    while start != -1:
        try:
            json.loads(line[start:])
            return line[start:]
        except ValueError:
            start = line.find(b'{"op_code"', start + 1)
    return None
