"""What a submitit job runs: `JobCall`, around the caller's module-level function.

In the job (`python -m submitit.core._submit` on a Slurm node, or a local process), a
`JobCall`:

- loads the split from the checksummed cache by fingerprint (`harness.pool.shared()` then
  gives it, as in a pool worker) and fixes TensorFlow's threads;
- writes the messages the function emits (`harness.pool.emit`, e.g. per-epoch NDCG) to
  `<job folder>/<job id>_messages.pkl`, which the coordinator reads while the job runs;
- returns a `JobResult`: the function's value and where it ran (host, Slurm node and job id,
  the TensorFlow device), which the executor writes to `<folder>/placements.jsonl`.

Preemption: submitit calls `checkpoint` on the signal Slurm sends (SIGUSR2) and requeues the
job under the same id; the call is resubmitted as it was, so a requeued trial restarts from
scratch (its first run's result never existed). The signal Slurm sends `signal_delay_s`
before the time limit instead ends the job as lost ("timed out"): the caller retries it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_JOB_SPLIT: dict[str, Any] = {}
MESSAGES = "_messages.pkl"  # <job id>_messages.pkl beside submitit's own files
_HEADER = struct.Struct("<I")


@dataclass
class JobResult:
    """What a job returns: the function's value (or why the job gave up) and where it ran."""

    value: Any = None
    placement: dict[str, Any] = field(default_factory=dict)
    lost: str | None = None  # the job ended without a value, e.g. "timed out after 60 min"


class _TimedOut(BaseException):
    """Raised in the job by the time-limit signal (a BaseException: the function's own
    `except Exception` must not swallow it)."""


def placement(job_id: str | None = None) -> dict[str, Any]:
    """Where this process runs: host, Slurm node and job id (if any), TensorFlow's device."""
    from harness.devices import describe_device

    env = os.environ
    where: dict[str, Any] = {"host": socket.gethostname()}
    node = env.get("SLURMD_NODENAME") or env.get("SLURM_JOB_NODELIST")
    if node:
        where["node"] = node
    job = env.get("SLURM_JOB_ID") or job_id
    if job:
        where["job_id"] = str(job)
    if env.get("CUDA_VISIBLE_DEVICES"):
        where["cuda_visible_devices"] = env["CUDA_VISIBLE_DEVICES"]
    where["device"] = describe_device()
    return where


class _FileConnection:
    """Stands in for a pool worker's pipe: `emit`ted messages go to a file, one
    length-prefixed pickle each (a reader takes complete records only)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, item: tuple[str, Any]) -> None:
        kind, message = item
        if kind != "message":
            return
        data = pickle.dumps(message)
        with open(self.path, "ab") as handle:
            handle.write(_HEADER.pack(len(data)) + data)
            handle.flush()


def read_messages(path: Path, offset: int) -> tuple[list[Any], int]:
    """The complete messages of `path` from byte `offset` on, and the offset after them."""
    try:
        with open(path, "rb") as handle:
            if handle.seek(0, os.SEEK_END) < offset:  # rewritten (a requeued job): from 0
                offset = 0
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    messages, at = [], 0
    while at + _HEADER.size <= len(data):
        (size,) = _HEADER.unpack_from(data, at)
        if at + _HEADER.size + size > len(data):
            break  # being written
        messages.append(pickle.loads(data[at + _HEADER.size : at + _HEADER.size + size]))
        at += _HEADER.size + size
    return messages, offset + at


class JobCall:
    """The callable a submitit job runs (see the module docstring). Picklable.

    Args:
        fn: A module-level function.
        split_ref: (path, fingerprint) of the split cache, or None.
        threads: TensorFlow threads (0 = TensorFlow's default).
        timeout_min: The job's time limit (as submitted).
        signal_delay_s: How long before the limit the scheduler signals (submitit's default).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        split_ref: tuple[str, str] | None,
        threads: int,
        timeout_min: float,
        signal_delay_s: float = 90,
    ) -> None:
        self.fn = fn
        self.split_ref = split_ref
        self.threads = threads
        self.timeout_min = timeout_min
        self.signal_delay_s = signal_delay_s
        self.restarts = 0  # requeues after preemption (counted in the resubmitted copy)
        self._started = 0.0

    @property
    def __name__(self) -> str:  # submitit names the job after its function
        return getattr(self.fn, "__name__", "job")

    def __call__(self, args: tuple, kwargs: dict[str, Any]) -> JobResult:
        self._started = time.monotonic()
        started = time.time()
        job_id, folder = _job_environment()
        try:
            with _job_context(self.split_ref, self.threads, folder, job_id):
                value = self.fn(*args, **kwargs)
        except _TimedOut:
            minutes = (time.monotonic() - self._started) / 60
            return JobResult(
                lost=f"job {job_id} timed out after {minutes:.0f} min "
                f"(executor.timeout_min={self.timeout_min})",
                placement=self._where(job_id, started),
            )
        return JobResult(value=value, placement=self._where(job_id, started))

    def _where(self, job_id: str | None, started: float) -> dict[str, Any]:
        where = placement(job_id)
        where["started"] = round(started, 3)  # this run of the call (epoch seconds)
        where["seconds"] = round(time.monotonic() - self._started, 3)
        if self.restarts:
            where["restarts"] = self.restarts
        return where

    def checkpoint(self, args: tuple, kwargs: dict[str, Any]) -> Any:
        """submitit, on the scheduler's signal: resubmit this call (preempted), or end the job
        as timed out (the signal that precedes the time limit)."""
        from submitit.core.utils import DelayedSubmission

        elapsed = time.monotonic() - self._started
        if elapsed >= self.timeout_min * 60 - 2 * self.signal_delay_s:
            raise _TimedOut()
        self.restarts += 1
        return DelayedSubmission(self, args, kwargs)


def _job_environment() -> tuple[str | None, Path | None]:
    """This job's id and folder (None outside a submitit job)."""
    try:
        import submitit

        env = submitit.JobEnvironment()
        return str(env.job_id), env.paths.folder
    except Exception:  # noqa: BLE001 - called outside a job (tests): no message file
        return None, None


@contextlib.contextmanager
def _job_context(
    split_ref: tuple[str, str] | None, threads: int, folder: Path | None, job_id: str | None
) -> Iterator[None]:
    from harness import pool
    from harness.pool import THREAD_ENV

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if threads > 0:
        os.environ.update({name: str(threads) for name in THREAD_ENV})
        pool.set_tensorflow_threads(threads)
    pool._SHARED = _load_split(split_ref) if split_ref is not None else None
    if folder is not None and job_id is not None:
        # appended to by a requeued job too: its epochs are reported again, with the same values
        pool._CONN = _FileConnection(Path(folder) / f"{job_id}{MESSAGES}")
    try:
        yield
    finally:
        pool._SHARED = None
        pool._CONN = None


def _load_split(split_ref: tuple[str, str]) -> Any:
    path, fingerprint = split_ref
    split = _JOB_SPLIT.get(fingerprint)
    if split is None:
        from harness.data.split import load_cached

        if not Path(path).exists():
            raise FileNotFoundError(
                f"the split cache {path} is not visible in this job: executor.folder (or "
                "VAE_SWEEP_DATA_DIR) must be on a filesystem the jobs share"
            )
        split = load_cached(Path(path), fingerprint)
        if split is None:
            raise FileNotFoundError(f"the split cache {path} is unreadable or altered")
        _JOB_SPLIT[fingerprint] = split
    return split
