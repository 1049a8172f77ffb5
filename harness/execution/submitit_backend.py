"""`executor=submitit_local` and `executor=slurm`: jobs through submitit.

Each job is one process (`python -m submitit.core._submit`, on this machine or a Slurm node)
that runs a module-level function. The split does not travel with the job: the coordinator
writes it once to the checksummed split cache (`<folder>/splits/<fingerprint>.npz`, or
`$VAE_SWEEP_DATA_DIR/splits/`), and each job reads it back by fingerprint, so
`harness.pool.shared()` gives the same split in a job as in a pool worker. At most
`n_workers` jobs are in flight; the rest wait here, in submission order.

A job that raised fails its future with `WorkerError` (its traceback); a job that ended
without a result (killed, cancelled with `scancel`, timed out, its node lost) fails it with
`WorkerLost`, whose reason quotes the state Slurm (or the local process) reports. A
preempted job is requeued by submitit under the same id and restarts its call from scratch
(`jobs.JobCall.checkpoint`); its future is completed once, by the rerun.

Each submitted job's `JobFuture.job_ref` (folder and job id) lets another coordinator
process `attach` to it: a rerun after the coordinator was killed waits for the job (or
reads its finished result from the folder) instead of running it again. Messages a job
emits (`harness.pool.emit`) reach `future.on_message` through a file in its folder; where
each finished job ran is appended to `<folder>/placements.jsonl` (`placements`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.compat.submitit import local_process, outcome_and_result
from harness.execution.base import JobFuture
from harness.execution.jobs import MESSAGES, JobCall, JobResult, read_messages
from harness.execution.settings import ExecutorConfigError, ExecutorSettings
from harness.pool import WorkerError, WorkerLost, available_cpus

log = logging.getLogger("harness.execution")
PLACEMENTS = "placements.jsonl"
POLL_SECONDS = 0.2  # result files are checked this often (a stat each)
STATE_SECONDS = 2.0  # Slurm's job states (one squeue call) at most this often
# squeue states after which a job writes nothing more (Slurm's job state codes)
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
         "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT", "REVOKED", "SPECIAL_EXIT"}  # fmt: skip


def split_cache_path(folder: Path, fingerprint: str) -> Path:
    """Where jobs read the split: `$VAE_SWEEP_DATA_DIR/splits/` if set, else the folder's."""
    base = os.environ.get("VAE_SWEEP_DATA_DIR")
    root = Path(base).expanduser() if base else folder
    return root / "splits" / f"{fingerprint}.npz"


def publish_split(split: Any, folder: Path) -> tuple[str, str] | None:
    """Write `split` to the split cache the jobs read (unless a valid copy is there)."""
    if split is None:
        return None
    from harness.data.split import load_cached, save_cached

    path = split_cache_path(folder, split.fingerprint)
    if not path.exists() or load_cached(path, split.fingerprint) is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_cached(split, path)
    return str(path), split.fingerprint


class SubmititExecutor:
    """Jobs through `submitit.AutoExecutor` (cluster "local" or "slurm")."""

    def __init__(self, settings: ExecutorSettings, split: Any) -> None:
        import submitit

        self.settings = settings
        self.cluster = "slurm" if settings.backend == "slurm" else "local"
        if self.cluster == "slurm":
            check_slurm()
        self.folder = settings.folder_path
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key = getattr(split, "fingerprint", None)
        self._split_ref = publish_split(split, self.folder)
        cpus = available_cpus()
        if settings.n_workers == "auto":
            n = settings.array_parallelism or cpus
        else:
            n = int(settings.n_workers)
        self.n_workers = max(1, n)
        if self.cluster == "slurm":
            self.threads = settings.cpus_per_task or 1
        else:
            self.threads = max(1, cpus // self.n_workers)
        self._executor = submitit.AutoExecutor(
            folder=self.folder / "jobs" / "%j", cluster=self.cluster
        )
        self._executor.update_parameters(**self._parameters())
        self._queue: deque[tuple[JobFuture, Callable[..., Any], tuple, dict]] = deque()
        self._jobs: dict[JobFuture, Any] = {}
        self._last_states = 0.0
        self._states: dict[str, str] = {}  # Slurm job id -> state (squeue), ended ones kept
        self._ended_at: dict[str, float] = {}  # job id -> when it was first seen ended
        self._read: dict[JobFuture, int] = {}  # bytes of each job's message file delivered
        self._closed = False
        log.info("submitting jobs to %s (%d at a time)", self.describe(), self.n_workers)

    def describe(self) -> str:
        if self.cluster == "slurm":
            where = f"partition {self.settings.partition}" if self.settings.partition else "Slurm"
            return f"Slurm ({where})"
        return "submitit's local executor"

    def _parameters(self) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {"timeout_min": s.timeout_min}
        if self.cluster == "slurm":
            params["cpus_per_task"] = self.threads
            if s.gpus_per_node:
                params["gpus_per_node"] = s.gpus_per_node
            if s.mem_gb is not None:
                params["mem_gb"] = s.mem_gb
            if s.partition:
                params["slurm_partition"] = s.partition
            if s.account:
                params["slurm_account"] = s.account
            if s.qos:
                params["slurm_qos"] = s.qos
            if s.additional_parameters:
                params["slurm_additional_parameters"] = dict(s.additional_parameters)
            if s.setup:
                params["slurm_setup"] = list(s.setup)
        elif s.gpus_per_node:
            params["gpus_per_node"] = s.gpus_per_node
        return params

    # --- the Executor interface ----------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JobFuture:
        if self._closed:
            raise RuntimeError("the executor is closed")
        future = JobFuture(self, getattr(fn, "__name__", "job"))
        self._queue.append((future, fn, args, kwargs))
        self._launch()
        return future

    def wait(
        self, futures: Iterable[concurrent.futures.Future], timeout: float | None = None
    ) -> set[concurrent.futures.Future]:
        futures = list(futures)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._collect()
            self._launch()
            done = {f for f in futures if f.done()}
            if done or not futures:
                return done
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return done
            time.sleep(POLL_SECONDS if left is None else min(POLL_SECONDS, left))

    def close(self, cancel: bool = False) -> None:
        """Forget the queued jobs; with `cancel`, also cancel the jobs in flight."""
        if self._closed:
            return
        self._closed = True
        for future, *_ in self._queue:
            future.cancel()
        self._queue.clear()
        if cancel:
            for future, job in self._jobs.items():
                try:
                    job.cancel(check=False)
                except Exception as error:  # noqa: BLE001 - best effort while stopping
                    log.warning("could not cancel job %s: %s", job.job_id, error)
                future.cancel()
            if self._jobs:
                log.info("cancelled %d job(s) in flight", len(self._jobs))
        self._jobs.clear()

    def __enter__(self) -> SubmititExecutor:
        return self

    def __exit__(self, kind: Any, *exc: object) -> None:
        self.close(cancel=kind is not None and self.settings.cancel_on_exit)

    def job_ids(self) -> dict[JobFuture, str]:
        """Future -> submitit/Slurm job id of the jobs in flight."""
        return {future: str(job.job_id) for future, job in self._jobs.items()}

    # --- internals ---------------------------------------------------------------------------
    def _launch(self) -> None:
        from submitit.core.utils import FailedJobError

        while self._queue and len(self._jobs) < self.n_workers:
            future, fn, args, kwargs = self._queue.popleft()
            call = JobCall(fn, self._split_ref, self.threads, self.settings.timeout_min)
            try:
                job = self._executor.submit(call, args, kwargs)
            except FailedJobError as error:  # sbatch refused: its own message, one line
                message = " ".join(str(error).split()) or "sbatch failed"
                raise ExecutorConfigError(f"Slurm refused the job: {message}") from None
            self._jobs[future] = job
            future.launched(
                {
                    "backend": self.cluster,
                    "folder": str(job.paths.folder),
                    "job_id": str(job.job_id),
                    "submitted": round(time.time(), 3),  # sbatch done (epoch seconds)
                }
            )

    def attach(self, job_ref: dict[str, Any], label: str = "job") -> JobFuture | None:
        """A future for a job submitted earlier (by another coordinator process), or None if
        `job_ref` is not a job of this backend or its folder is gone. The job counts against
        `n_workers` like the jobs this executor submits."""
        import submitit

        if not job_ref or job_ref.get("backend") != self.cluster:
            return None
        folder, job_id = Path(str(job_ref.get("folder", ""))), str(job_ref.get("job_id", ""))
        if not job_id or not folder.is_dir():
            return None
        if self.cluster == "slurm":
            job: Any = submitit.SlurmJob(folder=folder, job_id=job_id)
        else:
            job = submitit.LocalJob(folder=folder, job_id=job_id)
        future = JobFuture(self, label)
        future.launched({**job_ref, "folder": str(folder), "job_id": job_id})
        self._jobs[future] = job
        self._last_states = 0.0  # its state at the next wait
        return future

    def _collect(self) -> None:
        if not self._jobs:
            return
        if self.cluster == "slurm" and time.monotonic() - self._last_states > STATE_SECONDS:
            self._last_states = time.monotonic()
            self._poll_slurm()
        for future, job in list(self._jobs.items()):
            finished = self._finished(job)  # before the messages: the last ones are read
            self._deliver(future, job)
            if not finished:
                continue
            del self._jobs[future]
            self._read.pop(future, None)
            if future.cancelled():
                continue
            self._complete(future, job)

    def _deliver(self, future: JobFuture, job: Any) -> None:
        """Pass the messages the job wrote since the last look to `future.on_message`."""
        if future.on_message is None:
            return
        path = job.paths.folder / f"{job.job_id}{MESSAGES}"
        messages, self._read[future] = read_messages(path, self._read.get(future, 0))
        for message in messages:
            future.on_message(message)

    def _poll_slurm(self) -> None:
        """Job states from one `squeue` call (sacct needs accounting, which many clusters and
        a localhost Slurm lack); a job squeue no longer knows has ended too."""
        import subprocess

        ids = [str(job.job_id) for job in self._jobs.values()]
        try:
            out = subprocess.run(
                ["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(ids)],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as error:
            log.debug("squeue failed: %s", error)
            return
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            log.debug("squeue failed: %s", out.stderr.strip())
            return
        seen = {}
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                seen[parts[0]] = parts[1]
        now = time.monotonic()
        for job_id in ids:
            state = seen.get(job_id, "ENDED (purged from squeue)")
            self._states[job_id] = state
            if state.split()[0] in ENDED or state.startswith("ENDED"):
                self._ended_at.setdefault(job_id, now)
            else:  # e.g. pending again after a requeue (preemption)
                self._ended_at.pop(job_id, None)

    def _finished(self, job: Any) -> bool:
        if job.paths.result_pickle.exists():
            return True
        if self.cluster == "slurm":
            # ended without a result file: give a shared filesystem a moment to show it
            ended = self._ended_at.get(str(job.job_id))
            return ended is not None and time.monotonic() - ended > 2 * STATE_SECONDS
        if local_process(job) is None:  # attached: is its process still there?
            return not _pid_alive(job.job_id)
        return job.done()

    def _complete(self, future: JobFuture, job: Any) -> None:
        if not job.paths.result_pickle.exists():  # killed, cancelled, timed out, node lost
            state = self._states.get(str(job.job_id)) or _local_state(job)
            future.set_exception(
                WorkerLost(f"job {job.job_id} ended without a result (state {state})")
            )
            return
        try:
            # the result file itself: job.result() would also wait for the process to exit
            outcome, result = outcome_and_result(job)
        except Exception as error:  # noqa: BLE001 - an unreadable result file
            future.set_exception(WorkerLost(f"job {job.job_id}: {type(error).__name__}: {error}"))
            return
        if outcome == "error":  # the job raised: `result` is its traceback
            text = str(result)
            if "KeyboardInterrupt" in text:  # cancelled (local jobs get SIGINT)
                future.set_exception(WorkerLost(f"job {job.job_id} was interrupted"))
            elif "UncompletedJobError" in text:  # submitit gave up requeuing it
                last = text.strip().splitlines()[-1]
                future.set_exception(WorkerLost(f"job {job.job_id}: {last}"))
            else:
                future.set_exception(
                    WorkerError(f"{future.label} failed in job {job.job_id}:\n{text}")
                )
            return
        if not isinstance(result, JobResult):  # a job submitted by an older version
            future.set_result(result)
            return
        future.placement = result.placement
        self._record_placement(future, job, result)
        if result.lost:
            future.set_exception(WorkerLost(result.lost))
        else:
            future.set_result(result.value)

    def _record_placement(self, future: JobFuture, job: Any, result: JobResult) -> None:
        """One line per finished job in `<folder>/placements.jsonl` (best effort)."""
        line = {"job_id": str(job.job_id), "label": future.label, "backend": self.cluster,
                **result.placement, "lost": result.lost}  # fmt: skip
        try:
            with open(self.folder / PLACEMENTS, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line, default=str) + "\n")
        except OSError as error:
            log.debug("could not record where job %s ran: %s", job.job_id, error)


def _pid_alive(job_id: Any) -> bool:
    """A local job's id is its process id: is that process still there?"""
    try:
        os.kill(int(job_id), 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def placements(folder: Path | str) -> list[dict[str, Any]]:
    """Where each finished job of an executor folder ran (`<folder>/placements.jsonl`)."""
    path = Path(folder) / PLACEMENTS
    if not path.exists():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(text))
    return lines


def _local_state(job: Any) -> str:
    try:
        return str(job.state)
    except Exception:  # noqa: BLE001 - a state is only for the message
        return "unknown"


def check_slurm() -> None:
    """Slurm's commands must be on PATH for executor=slurm (one line otherwise)."""
    for command in ("sbatch", "squeue", "scancel"):
        if shutil.which(command) is None:
            raise ExecutorConfigError(
                f"executor=slurm needs Slurm's `{command}` command, which is not on PATH; run "
                "where Slurm is installed, or use executor=submitit_local to run the same jobs "
                "on this machine."
            )
