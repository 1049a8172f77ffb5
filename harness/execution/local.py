"""`executor=local`: the spawned worker pool of `harness.pool`, behind the `Executor` interface.

Jobs go to the pool's workers in submission order, each worker holding the split, exactly as
before the interface existed: results are bit-identical to it. A worker that dies or stays
silent for `worker_timeout` fails its job with `WorkerLost` and is replaced.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from harness.execution.base import JobFuture
from harness.pool import WorkerError, WorkerLayout, WorkerLost
from harness.worker_pool import WorkerPool

log = logging.getLogger("harness.execution")


class LocalExecutor:
    """A `WorkerPool` of `layout.n_workers` spawned workers holding `split`."""

    def __init__(
        self,
        layout: WorkerLayout,
        split: Any,
        *,
        recycle_after: int | None = 100,
        worker_timeout: float | None = None,
        preload_tensorflow: bool = True,
    ) -> None:
        key = getattr(split, "fingerprint", None)
        log.info(
            "starting %d worker process(es), %d TensorFlow thread(s) each",
            layout.n_workers,
            layout.threads,
        )
        self.pool = WorkerPool(
            layout,
            split,
            key,
            recycle_after,
            preload_tensorflow=preload_tensorflow,
            silence_timeout=worker_timeout,
        )
        self.key = key
        self.worker_timeout = worker_timeout
        self._futures: dict[int, JobFuture] = {}

    @property
    def n_workers(self) -> int:
        return self.pool.n_workers

    @property
    def closed(self) -> bool:
        return self.pool._closed

    def describe(self) -> str:
        return f"{self.n_workers} local worker process(es)"

    def set_worker_timeout(self, seconds: float | None) -> None:
        """Change the silence limit of busy workers (e.g. scaled to the epoch time seen)."""
        self.worker_timeout = self.pool.silence_timeout = seconds

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JobFuture:
        future = JobFuture(self, getattr(fn, "__name__", "job"))
        ticket = self.pool.submit(fn, args, kwargs)
        self._futures[ticket] = future
        return future

    def wait(
        self, futures: Iterable[concurrent.futures.Future], timeout: float | None = None
    ) -> set[concurrent.futures.Future]:
        futures = list(futures)
        deadline = None if timeout is None else time.monotonic() + timeout
        pumped = False
        while True:
            done = {f for f in futures if f.done()}
            if done or not futures:
                return done
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if left == 0.0 and pumped:
                return done
            if not self._futures:
                raise RuntimeError("waiting on futures that are not running on this executor")
            self.pump(left)  # at least once, so timeout=0 collects what already arrived
            pumped = True

    def pump(self, timeout: float | None) -> None:
        """Receive what the workers sent within `timeout`; complete the finished futures."""

        def message(ticket: int, payload: Any) -> None:
            future = self._futures.get(ticket)
            if future is not None and future.on_message is not None:
                future.on_message(payload)

        for ticket, ok, value in self.pool.poll(timeout, message):
            future = self._futures.pop(ticket, None)
            if future is None or future.cancelled():
                continue
            if ok:
                future.set_result(value)
            elif isinstance(value, WorkerLost):
                future.set_exception(value)
            else:
                future.set_exception(WorkerError(f"{future.label} failed in a worker:\n{value}"))

    def running_pids(self) -> dict[JobFuture, int]:
        """Future -> pid of the worker running it (tests, fault drills)."""
        return {
            self._futures[t]: pid for t, pid in self.pool.running().items() if t in self._futures
        }

    def close(self, cancel: bool = False) -> None:
        """Stop the workers; pending futures are cancelled (their jobs don't finish)."""
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        self.pool.close()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(cancel=True)
