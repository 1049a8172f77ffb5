"""Where training jobs run: one `Executor` per run, passed to each stage.

- `executor=local` (default): a pool of spawned worker processes on this machine
  (`harness.pool`), each holding the split.
- `executor=submitit_local`: submitit's local executor, one process per job, as on a cluster.
- `executor=slurm`: `submitit.AutoExecutor` on Slurm; jobs read the split from the shared
  filesystem by fingerprint.

In a job, `job_split()` (= `harness.pool.shared()`) is the split. Faults: a job whose worker
died, hung or was cancelled fails its future with `WorkerLost`; callers run it again.
"""

from __future__ import annotations

from typing import Any

from harness.execution.base import Executor, JobFuture
from harness.execution.settings import BACKENDS, ExecutorConfigError, ExecutorSettings
from harness.pool import WorkerError, WorkerLost, emit, shared

__all__ = [
    "BACKENDS",
    "Executor",
    "ExecutorConfigError",
    "ExecutorSettings",
    "JobFuture",
    "WorkerError",
    "WorkerLost",
    "emit",
    "job_split",
    "make_executor",
]


def job_split() -> Any:
    """In a job: the split the executor was made with (None elsewhere)."""
    return shared()


def split_mb(split: Any) -> float:
    """The split's matrices in MiB (each local worker holds a copy)."""
    total = 0
    for value in vars(split).values() if split is not None and hasattr(split, "__dict__") else ():
        for part in ("data", "indices", "indptr"):
            array = getattr(value, part, None)
            total += getattr(array, "nbytes", 0)
    return total / 2**20


def make_executor(settings: ExecutorSettings, split: Any) -> Executor:
    """The executor `settings.backend` names, its jobs seeing `split`.

    Raises:
        ExecutorConfigError: A backend that can't run here (e.g. no `sbatch` for Slurm).
    """
    if settings.backend == "local":
        from harness.execution.local import LocalExecutor
        from harness.pool import WORKER_MB, plan_workers

        try:
            layout = plan_workers(
                settings.n_workers, gpus=settings.gpus, worker_mb=WORKER_MB + 2 * split_mb(split)
            )
        except ValueError as error:
            raise ExecutorConfigError(str(error)) from None
        return LocalExecutor(
            layout,
            split,
            recycle_after=settings.recycle_after,
            worker_timeout=settings.worker_timeout,
        )
    from harness.execution.submitit_backend import SubmititExecutor

    return SubmititExecutor(settings, split)
