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
    "placement_summary",
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


def placement_summary(settings: ExecutorSettings | Any) -> dict[str, Any] | None:
    """Where the jobs of a run's submitit/Slurm executor ran, for the run's manifest: the
    backend, the per-job file (`<executor.folder>/placements.jsonl`: job id, host, Slurm node,
    device, restarts), and the jobs counted by node and by device. None for the local pool
    (the manifest's own machine and device are where its jobs ran) or without jobs."""
    from harness.execution.submitit_backend import PLACEMENTS, placements

    if not isinstance(settings, ExecutorSettings):  # the composed config, as a mapping
        try:
            settings = ExecutorSettings.from_config(settings)
        except Exception:  # noqa: BLE001 - a manifest never fails over this
            return None
    if settings.backend == "local":
        return None
    jobs = placements(settings.folder_path)
    if not jobs:
        return None

    def count(key: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in jobs:
            name = str(job.get(key) or job.get("host") or "unknown")
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))

    return {
        "backend": settings.backend,
        "file": str(settings.folder_path / PLACEMENTS),
        "jobs": len(jobs),
        "by_node": count("node"),
        "by_device": count("device"),
        "restarts": sum(int(job.get("restarts") or 0) for job in jobs),
        "lost": sum(job.get("lost") is not None for job in jobs),
    }
