"""A pool of spawned worker processes that train models: sweep trials and benchmark fits.

Each worker is a fresh interpreter ("spawn": no TensorFlow state inherited through fork) that
sets its TensorFlow intra/inter-op threads before TensorFlow initialises, receives the shared
data (the split) once when it starts, and then runs the tasks it is sent, one at a time.
Results come back in the order the jobs were given, whatever worker ran them, so callers that
seed every job get the same results from any number of workers.

Memory stays flat: tasks release what they built (the sweep objective and the benchmark's
fits call Keras' `clear_session` and `harness.models.sparse_ops.forget_traced_gradients`,
without which each model's graph stayed, ~29 MiB per ml-100k trial). As a safety net a
worker exits after `recycle_after` tasks and its successor is started while the last task
runs, so the replacement's TensorFlow import overlaps with work.

Faults: a worker that dies fails its job with `WorkerLost` (the reason names its exit code)
and is replaced; a worker that sends nothing for `silence_timeout` seconds while it runs a job
(it beats every `BEAT_SECONDS` from a thread, so a stopped or frozen process goes silent, a
slow epoch does not) is killed and treated the same way. Callers retry lost jobs.

Workers never import the caller's `__main__` (multiprocessing's spawn would re-run an
unguarded script in every worker): tasks are module-level functions of installed modules.

The pool is owned by an executor (`harness.execution.LocalExecutor`), which a run creates once
and passes to each stage.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

log = logging.getLogger("harness.pool")

THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")

# Set in worker processes only.
_SHARED: Any = None
_CONN: Connection | None = None
_SEND = threading.Lock()  # worker side: the task thread and the beat thread share the pipe
BEAT_SECONDS = 2.0  # a busy worker's heartbeat period
START_GRACE = 300.0  # extra silence allowed before a (new) worker takes its first job
WORKER_MB = 700.0  # resident memory of an idle worker with TensorFlow and the models loaded


class WorkerError(RuntimeError):
    """A task raised in a worker, or a worker process died; the message holds its traceback."""


class WorkerLost(WorkerError):
    """The worker running a job died, hung or vanished: the job did not fail on its own, so
    running it again (on a fresh worker) is the remedy.

    Attributes:
        reason: One line: what happened to the worker.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; containers and `taskset` shrink it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerLayout:
    """How many workers, and TensorFlow threads per worker (workers x threads <= cores).

    Attributes:
        n_workers: Worker processes.
        threads: TensorFlow intra- and inter-op threads of each worker.
        cpus: CPUs this process may use.
        gpus: GPU ids, one worker each (None = CPU only).
    """

    n_workers: int
    threads: int
    cpus: int
    gpus: tuple[int, ...] | None = None

    def worker_env(self, slot: int) -> dict[str, str]:
        """Environment of worker `slot`: its thread counts, and its GPU when GPUs are used."""
        env = {name: str(self.threads) for name in THREAD_ENV}
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[slot % len(self.gpus)])
        return env


def available_memory_mb() -> float:
    """Memory available to new processes in MiB (Linux MemAvailable; inf elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def plan_workers(
    n_workers: int | str,
    *,
    key: str = "sweep.n_workers",
    gpus: Sequence[int] | None = None,
    worker_mb: float | None = None,
) -> WorkerLayout:
    """Resolve `n_workers` ("auto" or a count) into workers and threads per worker.

    "auto" = one worker per CPU this process may use, or one per GPU when `gpus` is given.
    More workers than CPUs is allowed (with a warning): each then gets one thread, and the count
    is reduced (with a one-line warning) to what 80% of the available memory holds at
    `worker_mb` MiB per worker (default `WORKER_MB`; never below the CPU count).

    Raises:
        ValueError: `n_workers` is not "auto" or a positive integer (the message names `key`).
    """
    cpus = available_cpus()
    if gpus is not None and len(gpus) == 0:
        gpus = None
    if n_workers == "auto":
        n = len(gpus) if gpus is not None else cpus
    elif isinstance(n_workers, bool) or not isinstance(n_workers, int):
        raise ValueError(f"{key}={n_workers!r} must be 'auto' or a positive integer.")
    elif n_workers < 1:
        raise ValueError(
            f"{key}={n_workers} must be >= 1 (or 'auto' = the {cpus} CPUs this process may use)."
        )
    else:
        n = n_workers
    if n > cpus:
        footprint = worker_mb if worker_mb is not None else WORKER_MB
        fits = int(0.8 * available_memory_mb() // footprint) if footprint > 0 else n
        if n > max(fits, cpus):
            reduced = max(fits, cpus)
            warnings.warn(
                f"{key}={n}: {n} workers x ~{footprint:.0f} MiB exceed 80% of the "
                f"{available_memory_mb():.0f} MiB available; using {reduced} workers.",
                stacklevel=2,
            )
            n = reduced
        else:
            warnings.warn(
                f"{key}={n} exceeds the {cpus} CPUs this process may use: each worker gets 1 "
                "TensorFlow thread and they share the cores.",
                stacklevel=2,
            )
    return WorkerLayout(n, max(1, cpus // n), cpus, tuple(gpus) if gpus is not None else None)


def shared() -> Any:
    """In a worker: the data the pool was started with (the split). None elsewhere."""
    return _SHARED


def emit(message: Any) -> None:
    """In a worker: send `message` to the pool's `on_message` callback now (live progress).

    A no-op outside a worker, so task functions can also run in-process.
    """
    if _CONN is not None:
        with _SEND:
            _CONN.send(("message", message))


def rss_mb() -> float:
    """This process's resident memory in MiB (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


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
                target=_worker_main,
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


def _worker_main(
    conn: Connection, env: dict[str, str], data: Any, max_tasks: int | None, preload: bool
) -> None:
    global _SHARED, _CONN
    # Ctrl-C reaches the whole process group; the parent decides what happens to the tasks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
    if preload:
        set_tensorflow_threads(int(env.get("TF_NUM_INTRAOP_THREADS", "0")))
        if env.get("CUDA_VISIBLE_DEVICES"):  # pinned to one GPU: let workers share its memory
            from harness.devices import configure_tensorflow

            configure_tensorflow()
        import harness.models  # noqa: F401 - Keras and the models, before the freeze below
    _SHARED, _CONN = data, conn
    busy = threading.Event()
    threading.Thread(target=_beat, args=(conn, busy), name="harness-beat", daemon=True).start()
    # Everything loaded so far (TensorFlow, Keras, the split: ~400k objects) lives as long as
    # the process. Frozen, Python's cyclic collector stops rescanning it: a full collection
    # (Keras' clear_session after every trial runs one) drops from ~0.26 s to ~0.02 s and the
    # automatic ones during tracing get cheaper too.
    gc.freeze()
    done = 0
    while max_tasks is None or done < max_tasks:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message is None:
            return
        func, job, kwargs = message
        busy.set()
        with _SEND:  # taken: the parent's silence clock now runs without the start-up grace
            conn.send(("beat",))
        try:
            reply = ("result", "ok", func(*job, **kwargs), rss_mb())
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
            reply = ("result", "error", traceback.format_exc(), rss_mb())
        busy.clear()
        done += 1
        try:
            with _SEND:
                conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception:  # an unpicklable result
            with _SEND:
                conn.send(("result", "error", traceback.format_exc(), rss_mb()))


def _beat(conn: Connection, busy: threading.Event) -> None:
    """Worker thread: while a task runs, tell the parent every `BEAT_SECONDS` this process is
    alive (a stopped or frozen worker falls silent; the parent kills it after its timeout)."""
    while True:
        busy.wait()
        time.sleep(BEAT_SECONDS)
        if not busy.is_set():
            continue
        try:
            with _SEND:
                if busy.is_set():
                    conn.send(("beat",))
        except (EOFError, OSError, ValueError):
            return


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


def set_tensorflow_threads(threads: int) -> None:
    """Fix TensorFlow's thread pools before its runtime starts (they can't change later)."""
    if threads < 1:
        return
    from harness.devices import import_tensorflow  # start-up lines silenced unless asked

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
