"""Worker processes that train models (sweep trials, benchmark fits): how many and with how
many TensorFlow threads (`plan_workers`, `WorkerLayout`), what runs inside one
(`worker_main`: its task loop and heartbeat thread), what a task sees there (`shared`,
`emit`), and the errors a job ends with (`WorkerError`, `WorkerLost`). The pool that starts
and watches the workers from the parent is `harness.worker_pool.WorkerPool`.

Each worker is a fresh interpreter ("spawn": no TensorFlow state inherited through fork) that
sets its TensorFlow intra/inter-op threads before TensorFlow initialises, receives the shared
data (the split) once when it starts, and then runs the tasks it is sent, one at a time.

Memory stays flat: tasks release what they built (the sweep objective and the benchmark's
fits call Keras' `clear_session` and `harness.models.sparse_ops.forget_traced_gradients`,
without which each model's graph stayed, ~29 MiB per ml-100k trial). As a safety net a
worker exits after `recycle_after` tasks and its successor is started while the last task
runs, so the replacement's TensorFlow import overlaps with work.

Faults: a worker that dies fails its job with `WorkerLost` (the reason names its exit code)
and is replaced; a worker that sends nothing for `silence_timeout` seconds while it runs a job
(it beats every `BEAT_SECONDS` from a thread, so a stopped or frozen process goes silent, a
slow epoch does not) is killed and treated the same way. Callers retry lost jobs.

The pool is owned by an executor (`harness.execution.LocalExecutor`), which a run creates once
and passes to each stage.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("harness.pool")

THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")

# Set in worker processes only.
_SHARED: Any = None
_CONN: Connection | None = None
_SEND = threading.Lock()  # worker side: the task thread and the beat thread share the pipe
BEAT_SECONDS = 2.0  # a busy worker's heartbeat period
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


def worker_main(
    conn: Connection, env: dict[str, str], data: Any, max_tasks: int | None, preload: bool
) -> None:
    """A worker process's main: set up threads and TensorFlow, keep ``data`` for `shared`,
    then run the tasks ``conn`` brings, one at a time, replying with each result (or
    traceback) and this process's memory, beating while a task runs; return after
    ``max_tasks`` tasks, a None message, or when the parent is gone."""
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


def set_tensorflow_threads(threads: int) -> None:
    """Fix TensorFlow's thread pools before its runtime starts (they can't change later)."""
    if threads < 1:
        return
    from harness.devices import import_tensorflow  # start-up lines silenced unless asked

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
