"""The executor interface: submit a training job, get a future.

Every training job of a run (a sweep trial, a benchmark fit or scoring) goes through one
`Executor`, created once by the entry point (`make_executor`) and passed to each stage.
Futures complete while their owner waits on them (`Executor.wait`, or `future.result()`),
in the caller's thread: live messages from a job (`harness.pool.emit`, e.g. per-epoch NDCG)
reach `future.on_message` there, so callbacks may touch the study without locks.

A job that fails on its own raises `WorkerError` (its traceback in the message) from
`future.result()`; a job whose worker died, hung or was cancelled by the cluster raises
`WorkerLost` (a `WorkerError`): nothing is wrong with the job, callers run it again.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from harness.pool import WorkerError, WorkerLost

__all__ = ["Executor", "JobFuture", "WorkerError", "WorkerLost"]


class JobFuture(concurrent.futures.Future):
    """A `concurrent.futures.Future` completed by its executor's `wait`.

    Attributes:
        on_message: Called (in the waiting thread) with each message the job emits.
        label: What the job is, for progress and error lines.
        job_ref: Once the job is submitted to a cluster: {"backend", "folder", "job_id"}, what
            `SubmititExecutor.attach` needs to wait for it from another process (None on the
            local pool, and while the job waits in the executor's queue).
        placement: Once done: where the job ran (host, Slurm node and job id, device), if the
            backend reports it.
    """

    def __init__(self, executor: Any, label: str = "") -> None:
        super().__init__()
        self._executor = executor
        self.on_message: Callable[[Any], None] | None = None
        self.label = label
        self.job_ref: dict[str, str] | None = None
        self.placement: dict[str, Any] | None = None
        self._on_launch: list[Callable[[dict[str, str]], None]] = []

    def when_launched(self, callback: Callable[[dict[str, str]], None]) -> None:
        """Call `callback(job_ref)` once the job is submitted (now, if it already is)."""
        if self.job_ref is not None:
            callback(self.job_ref)
        else:
            self._on_launch.append(callback)

    def launched(self, job_ref: dict[str, str]) -> None:
        """The executor: the job was submitted as `job_ref`."""
        self.job_ref = job_ref
        callbacks, self._on_launch = self._on_launch, []
        for callback in callbacks:
            callback(job_ref)

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            self._executor.wait([self], timeout)
        return super().result(timeout=0 if not self.done() else None)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done():
            self._executor.wait([self], timeout)
        return super().exception(timeout=0 if not self.done() else None)


@runtime_checkable
class Executor(Protocol):
    """Runs picklable module-level functions as jobs (see the module docstring).

    Attributes:
        n_workers: Jobs that run at once (callers size their windows with it).
        key: Identity of the data the jobs see through `harness.execution.job_split()`
            (the split fingerprint).
    """

    n_workers: int
    key: str | None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JobFuture: ...

    def wait(
        self, futures: Iterable[concurrent.futures.Future], timeout: float | None = None
    ) -> set[concurrent.futures.Future]:
        """Wait until at least one of `futures` is done (or `timeout`); the done ones."""
        ...

    def close(self, cancel: bool = False) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...
