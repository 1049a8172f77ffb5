"""`SerialExecutor`: the `Executor` interface (`harness.execution`) run inline in this process.

`submit` runs the job before it returns, so its future is already done; one job runs at a
time, in submission order. Jobs see the caller's objects (the split, a fitted model), so
nothing is pickled or saved to a file, and a job's error is its own exception, not a
`WorkerError`. The benchmark runs its recipe (``harness.benchmark.recipe``) on one when it
has no worker executor, and for the models fitted in this process (closed-form ones).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable
from typing import Any


class SerialExecutor:
    """Runs each job inline at `submit` (see the module docstring).

    Attributes:
        n_workers: 1 (one job at a time).
        key: None (jobs don't read a split the executor holds: they are handed it).
    """

    def __init__(self) -> None:
        self.n_workers = 1
        self.key: str | None = None

    def describe(self) -> str:
        return "this process"

    def submit(
        self, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future:
        """``fn(*args, **kwargs)`` now; a done future with its result or exception (an
        interrupt such as KeyboardInterrupt propagates at once)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        try:
            result = fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - the future carries it to the caller
            future.set_exception(error)
        else:
            future.set_result(result)
        return future

    def wait(
        self, futures: Iterable[concurrent.futures.Future], timeout: float | None = None
    ) -> set[concurrent.futures.Future]:
        """The done futures among ``futures`` (every one this executor made is done)."""
        return {f for f in futures if f.done()}

    def close(self, cancel: bool = False) -> None:
        """Nothing to stop."""

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
