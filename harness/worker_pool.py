"""The pool of spawned worker processes, seen from the parent: start the workers, send each
idle one the next job, receive results, messages and heartbeats, and replace a worker that
died, stayed silent too long or ran `recycle_after` jobs. What runs inside a worker, how many
workers and threads, and the errors a job raises are in `harness.pool`.

Jobs go out in submission order and results come back tagged with their ticket, so callers
that seed every job get the same results from any number of workers.

Workers never import the caller's `__main__` (multiprocessing's spawn would re-run an
unguarded script in every worker): tasks are module-level functions of installed modules.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from harness.pool import BEAT_SECONDS, WorkerError, WorkerLayout, WorkerLost, worker_main

log = logging.getLogger("harness.pool")
START_GRACE = 300.0  # extra silence allowed before a (new) worker takes its first job


@dataclass
class _Slot:
    process: Any
    conn: Connection
    started: float
    tasks: int = 0
    job: int | None = None  # ticket of the job it is running
    heard: float = 0.0  # monotonic time of its last message (beats included) while busy
    acked: bool = False  # the worker has said something since its job was sent (it runs)
    successor: _Slot | None = None
    names: dict[int, str] = field(default_factory=dict)


@dataclass
class MemoryRecord:
    """One worker's resident memory right after a task: the pool's memory log."""

    slot: int
    pid: int
    task: int  # tasks this process has run, this one included
    rss_mb: float


@dataclass
class WorkerPool:
    """`layout.n_workers` spawned workers sharing `data`; see the module docstring.

    Args:
        layout: Workers, threads per worker, GPUs (`plan_workers`).
        data: Sent to each worker once at start; tasks get it through `shared()`.
        key: Identity of `data` (e.g. the split fingerprint).
        recycle_after: Tasks after which a worker process is replaced (None = never).
        preload_tensorflow: Import TensorFlow and fix its thread pools when a worker starts
            (False: only the thread environment variables are set; for tasks without TF).
        silence_timeout: Seconds a busy worker may send nothing (not even its beat) before it
            is killed and its job fails with `WorkerLost` (None = never).
    """

    layout: WorkerLayout
    data: Any = None
    key: str | None = None
    recycle_after: int | None = 100
    preload_tensorflow: bool = True
    silence_timeout: float | None = None
    memory: list[MemoryRecord] = field(default_factory=list)
    _slots: list[_Slot] = field(default_factory=list)
    _queue: deque = field(default_factory=deque)
    _next_ticket: int = 0
    _closed: bool = False

    def __post_init__(self) -> None:
        if self.recycle_after is not None and self.recycle_after < 1:
            raise ValueError(f"recycle_after={self.recycle_after} must be >= 1 (or None).")
        self._context = multiprocessing.get_context("spawn")
        self._slots = [self._start(slot) for slot in range(self.layout.n_workers)]

    @property
    def n_workers(self) -> int:
        return self.layout.n_workers

    def submit(
        self, func: Callable[..., Any], job: tuple, kwargs: dict[str, Any] | None = None
    ) -> int:
        """Queue `func(*job, **kwargs)` (a module-level function) for the next idle worker, in
        submission order; returns its ticket for `poll`."""
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        ticket = self._next_ticket
        self._next_ticket += 1
        self._queue.append((ticket, func, job, kwargs or {}))
        self._dispatch()
        return ticket

    def pids(self) -> list[int]:
        """Process ids of the current workers (slot order)."""
        return [s.process.pid for s in self._slots]

    def running(self) -> dict[int, int]:
        """Ticket -> pid of the worker running it."""
        return {s.job: s.process.pid for s in self._slots if s.job is not None}

    def poll(
        self, timeout: float | None, on_message: Callable[[int, Any], None] | None = None
    ) -> list[tuple[int, bool, Any]]:
        """Wait up to `timeout` seconds (None = until one finishes) for finished jobs:
        [(ticket, ok, result, or traceback text, or `WorkerLost`)].

        `on_message(ticket, message)` is called for each `emit(message)` of a running job.
        A worker that dies, or stays silent for `silence_timeout`, fails its job with a
        `WorkerLost` and is replaced.
        """
        done: list[tuple[int, bool, Any]] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            busy = [s.conn for s in self._slots if s.job is not None]
            if not busy:
                return done
            step = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if self.silence_timeout is not None:
                check = max(min(self.silence_timeout / 4, BEAT_SECONDS), 0.05)
                step = check if step is None else min(step, check)
            for conn in wait(busy, timeout=step):
                self._receive(conn, done, on_message)
            self._kill_silent(done)
            self._dispatch()
            if done or (deadline is not None and time.monotonic() >= deadline):
                return done

    def _receive(
        self,
        conn: Connection,
        done: list[tuple[int, bool, Any]],
        on_message: Callable[[int, Any], None] | None,
    ) -> None:
        index = next(i for i, s in enumerate(self._slots) if s.conn is conn)
        slot = self._slots[index]
        ticket = slot.job
        assert ticket is not None
        try:
            kind, *payload = conn.recv()
        except (EOFError, OSError):
            slot.process.join(timeout=5)
            done.append((ticket, False, WorkerLost(self._died(slot, ticket))))
            slot.job = None
            self._replace(index)
            return
        slot.heard, slot.acked = time.monotonic(), True
        if kind == "beat":
            return
        if kind == "message":
            if on_message is not None:
                on_message(ticket, payload[0])
            return
        slot.job = None
        slot.names.pop(ticket, None)
        status, value, rss = payload
        self.memory.append(MemoryRecord(index, slot.process.pid, slot.tasks, rss))
        done.append((ticket, status == "ok", value))
        if self.recycle_after is not None and slot.tasks >= self.recycle_after:
            self._replace(index)

    def _kill_silent(self, done: list[tuple[int, bool, Any]]) -> None:
        if self.silence_timeout is None:
            return
        now = time.monotonic()
        for index, slot in enumerate(self._slots):
            # a worker still starting (imports) has not taken its job yet: a grace period more
            limit = self.silence_timeout + (0 if slot.acked else START_GRACE)
            if slot.job is None or now - slot.heard < limit:
                continue
            ticket = slot.job
            with contextlib.suppress(OSError):
                os.kill(slot.process.pid, signal.SIGKILL)  # also ends a stopped process
            slot.process.join(timeout=30)
            reason = (
                f"worker process {slot.process.pid} sent nothing for {now - slot.heard:.0f} s "
                f"while running {slot.names.get(ticket, 'a job')} (hung or stopped; limit "
                f"sweep.worker_timeout={self.silence_timeout:g} s): killed"
            )
            log.warning("%s", reason)
            done.append((ticket, False, WorkerLost(reason)))
            slot.job = None
            self._replace(index)

    def map(
        self,
        func: Callable[..., Any],
        jobs: Iterable[tuple],
        *,
        on_message: Callable[[int, Any], None] | None = None,
        on_wait: Callable[[], None] | None = None,
        wait_seconds: float = 10.0,
    ) -> list[Any]:
        """Run `func(*job)` for each job on the workers; results in job order.

        `func` must be a module-level function (sent by reference). Every job runs even if one
        fails; then the first failure is raised.

        Args:
            on_message: Called in this process as `on_message(job_index, message)` for each
                `emit(message)` a job makes, while it runs.
            on_wait: Called at least every `wait_seconds` while jobs run (heartbeats).

        Raises:
            WorkerError: A job raised (with the worker's traceback), or a worker died.
        """
        tickets = {self.submit(func, job): i for i, job in enumerate(jobs)}
        results: list[Any] = [None] * len(tickets)
        errors: dict[int, str] = {}
        left = set(tickets)

        def message(ticket: int, payload: Any) -> None:
            if on_message is not None:
                on_message(tickets[ticket], payload)

        while left:
            for ticket, ok, value in self.poll(wait_seconds, message):
                left.discard(ticket)
                if ok:
                    results[tickets[ticket]] = value
                else:
                    errors[tickets[ticket]] = value
            if on_wait is not None:
                on_wait()
        if errors:
            first = min(errors)
            raise WorkerError(
                f"job {first} of {func.__name__} failed in a worker:\n{errors[first]}"
            )
        return results

    @property
    def idle(self) -> bool:
        """No job queued or running."""
        return not self._queue and all(s.job is None for s in self._slots)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers (finishing nothing that still runs); idempotent."""
        if self._closed:
            return
        self._closed = True
        slots = list(self._slots)
        slots += [s.successor for s in slots if s.successor is not None]
        for slot in slots:
            try:
                slot.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for slot in slots:
            slot.process.join(timeout=max(deadline - time.monotonic(), 0.1))
            if slot.process.is_alive():
                slot.process.kill()  # SIGKILL: also ends a stopped (SIGSTOP) worker
                slot.process.join()
            slot.conn.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------
    def _start(self, slot: int) -> _Slot:
        parent, child = self._context.Pipe()
        max_tasks = self.recycle_after
        with _main_not_imported():
            process = self._context.Process(
                target=worker_main,
                args=(
                    child,
                    self.layout.worker_env(slot),
                    self.data,
                    max_tasks,
                    self.preload_tensorflow,
                ),
                name=f"harness-worker-{slot}",
                daemon=True,
            )
            process.start()
        child.close()
        return _Slot(process, parent, time.monotonic())

    def _dispatch(self) -> None:
        for index in range(len(self._slots)):
            slot = self._slots[index]
            if not self._queue:
                return
            if slot.job is None:
                ticket, func, job, kwargs = self._queue.popleft()
                try:
                    slot.conn.send((func, job, kwargs))
                except (BrokenPipeError, ConnectionResetError):  # it died while idle
                    log.warning(
                        "worker process %s died while idle (exit code %s); replacing it",
                        slot.process.pid,
                        slot.process.exitcode,
                    )
                    self._queue.appendleft((ticket, func, job, kwargs))
                    self._replace(index)
                    slot = self._slots[index]
                    ticket, func, job, kwargs = self._queue.popleft()
                    slot.conn.send((func, job, kwargs))  # a fresh process: its pipe is open
                slot.job, slot.tasks = ticket, slot.tasks + 1
                slot.heard, slot.acked = time.monotonic(), False
                slot.names[ticket] = getattr(func, "__name__", "a job")
                if self.recycle_after is not None and slot.tasks >= self.recycle_after:
                    slot.successor = self._start(index)  # imports TensorFlow meanwhile

    @staticmethod
    def _died(slot: _Slot, ticket: int) -> str:
        code = slot.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return (
            f"worker process {slot.process.pid} died ({how}) while running "
            f"{slot.names.get(ticket, 'a job')}: out of memory, or killed?"
        )

    def _replace(self, index: int) -> None:
        old = self._slots[index]
        self._slots[index] = old.successor or self._start(index)
        old.successor = None
        old.process.join(timeout=30)
        if old.process.is_alive():
            old.process.kill()
            old.process.join()
        old.conn.close()


@contextlib.contextmanager
def _main_not_imported() -> Any:
    """Start processes without multiprocessing's import of the caller's `__main__` in them.

    Spawned children normally import the parent's main script (as `__mp_main__`) before
    running; an unguarded script (no `if __name__ == "__main__":`) would then start its own
    sweep in every worker. Our workers run only functions of installed modules, so the script
    is hidden from multiprocessing's preparation data while the process starts.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in vars(main)}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)
