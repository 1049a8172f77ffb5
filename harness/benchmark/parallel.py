"""Benchmark fits and scorings as jobs on an executor (`harness.execution`, or this process's
`SerialExecutor`), and the scheduler that runs a graph of them.

Every fit is seeded (and the models turn on TensorFlow's op determinism), so a fit gives the
same weights in a worker as in this process, whatever the thread count: results are
identical to a serial run. A fitted model can't cross processes cheaply, so a worker saves it
to a temporary file in its own format (the model's `save`) and returns that path with the fit's
facts and history. Scoring test users goes back to a worker, which loads the file
(`RemoteModel.score`); saving a final model copies the file (`RemoteModel.save`). The test
scorer in this process still sees one `score` call per scoring, so its accounting is
unchanged. The temporary file goes when its `RemoteModel` does.

Closed-form models (EASE, popularity) are fitted here: they take no seed and their weights
(an item x item matrix for EASE) are too big to ship.

On a `SerialExecutor` the same jobs run in this process on the caller's split and keep the
fitted model itself (`PoolScheduler.fit`, `PoolScheduler.evaluate`), so the benchmark's recipe
is one job graph whatever runs it.

`PoolScheduler` runs a graph of such jobs without barriers: jobs wait in a priority queue
here and go to a worker as soon as one is free (longest chain first); a finished job's
callback, run here, may add the jobs it unblocks. A job whose worker was lost (died, hung,
cancelled by the cluster) is run again on a fresh worker (seeded: the same result), up to
`LOST_RETRIES` times. Test-user scoring can run as such a job
too (`PoolScheduler.evaluate`: the worker computes the per-user metrics from the file); the
caller then hands the result to the scorer (`HeldOutTestScorer.score(evaluated=...)`) in
its own, deterministic, order.
"""

from __future__ import annotations

import atexit
import heapq
import logging
import math
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness import pool as worker_pool
from harness.benchmark.serial import SerialExecutor
from harness.benchmark.training import FitResult, HeldOutTestScorer, fit_seed, is_seeded
from harness.devices import free_model_memory
from harness.execution import WorkerError, WorkerLost

log = logging.getLogger("harness.benchmark")
_FIT_DIR: Path | None = None
LOST_RETRIES = 2  # re-runs of a job whose worker was lost


def _fit_dir(executor: Any = None) -> Path:
    """A process-wide temporary folder for the workers' fitted models (removed at exit); for
    cluster jobs, one under the executor's folder (a filesystem the jobs share)."""
    global _FIT_DIR
    shared = getattr(executor, "folder", None)
    if shared is not None:
        path = Path(shared) / "fits"
        path.mkdir(parents=True, exist_ok=True)
        return path
    if _FIT_DIR is None:
        _FIT_DIR = Path(tempfile.mkdtemp(prefix="harness-fits-"))
        atexit.register(shutil.rmtree, _FIT_DIR, ignore_errors=True)
    return _FIT_DIR


def _fit_path(model_name: str, executor: Any = None) -> Path:
    """A fresh temporary file for a worker's fitted model, in the model's own format."""
    from harness.models.registry import model_spec

    name = f"{model_name}-{uuid.uuid4().hex}{model_spec(model_name).formats[0]}"
    return _fit_dir(executor) / name


def on_executor(executor: Any, split) -> bool:
    """True when `executor`'s jobs hold `split` (else fits run in this process)."""
    return executor is not None and getattr(executor, "key", None) == split.fingerprint


def run_all(executor: Any, func: Callable[..., Any], jobs: Sequence[tuple]) -> list[Any]:
    """`func(*job)` for each job on `executor`, results in job order; a lost job runs again.

    Raises:
        WorkerError: a job failed (the first in job order), after every job has ended.
    """
    futures = [executor.submit(func, *job) for job in jobs]
    attempts = [0] * len(jobs)
    results: list[Any] = [None] * len(jobs)
    errors: dict[int, BaseException] = {}
    left = set(range(len(jobs)))
    while left:
        executor.wait([futures[i] for i in left])
        for i in sorted(left):
            if not futures[i].done():
                continue
            error = futures[i].exception()
            if isinstance(error, WorkerLost) and attempts[i] < LOST_RETRIES:
                attempts[i] += 1
                log.warning("%s: %s; running it again", func.__name__, error.reason)
                futures[i] = executor.submit(func, *jobs[i])
                continue
            left.discard(i)
            if error is None:
                results[i] = futures[i].result()
            else:
                errors[i] = error
    if errors:
        first = min(errors)
        raise WorkerError(f"job {first} of {func.__name__} failed: {errors[first]}")
    return results


def _remote_fit(executor: Any, path: Path, out: tuple) -> FitResult:
    facts, history, attrs = out
    return FitResult(RemoteModel(executor, path, attrs), facts, history)


def fit_cost(params: dict[str, Any], n_users: int, n_items: int) -> float:
    """A rough relative training time of a VAE fit, to start long fits first (ordering only:
    results never depend on it). Per epoch: a fixed cost per batch plus the dense layers'
    work (users x items x layer widths)."""
    epochs = int(params.get("n_epochs") or 1)
    batch = max(int(params.get("batch_size") or n_users), 1)
    width = float(params.get("intermediate_dim") or 0) + float(params.get("latent_dim") or 0)
    layers = int(params.get("n_hidden_layers") or 1)
    return epochs * (math.ceil(n_users / batch) * 2e7 + n_users * n_items * width * layers)


class PoolScheduler:
    """Jobs on the executor's workers, highest priority first, one per idle worker; each
    finished job's ``then(result)`` runs here (in completion order) and may add jobs. On a
    `SerialExecutor` (one worker: this process) the jobs run one at a time, in that order.

    Callers keep their outputs deterministic by storing results under their own keys in
    ``then`` and acting on them in a fixed order after `run`.

    Attributes:
        submitted: the ``label`` of every job, in the order it went to a worker.
    """

    def __init__(self, executor: Any) -> None:
        self.executor = executor
        self.here = isinstance(executor, SerialExecutor)  # jobs run in this process
        self.submitted: list[Any] = []
        self.lost: list[Any] = []  # labels of the jobs run again after their worker was lost
        self._ready: list[tuple] = []  # heap of (-priority, sequence, func, args, then, label)
        self._running: dict[Any, tuple] = {}  # future -> (then, label, func, args, attempts)
        self._sequence = 0

    def add(
        self,
        func: Callable[..., Any],
        args: tuple,
        then: Callable[[Any], None],
        *,
        priority: float = 0.0,
        label: Any = None,
    ) -> None:
        """Queue ``func(*args)`` (a module-level function) for a worker; ``then(result)``
        runs here when it finishes. Equal priorities keep the order they were added in."""
        label = label if label is not None else func.__name__
        heapq.heappush(self._ready, (-priority, self._sequence, func, args, then, label))
        self._sequence += 1

    def fit(
        self,
        split,
        model_name: str,
        params: dict[str, Any],
        seed: int,
        then: Callable[[FitResult], None],
        *,
        patience: int | None,
        priority: float = 0.0,
        label: Any = None,
    ) -> None:
        """Queue `fit_seed`; ``then`` gets its `FitResult`: on workers (a seeded model only)
        the model is a `RemoteModel`, in this process (`SerialExecutor`) the model itself."""
        if self.here:
            job = (split, model_name, params, seed, patience)
            self.add(_fit_here, job, then, priority=priority, label=label)
            return
        if not is_seeded(model_name):
            raise ValueError(f"{model_name} is fitted in this process, not on the pool")
        path = _fit_path(model_name, self.executor)
        self.add(
            _fit_in_worker,
            (model_name, params, seed, patience, str(path)),
            lambda out: then(_remote_fit(self.executor, path, out)),
            priority=priority,
            label=label,
        )

    def evaluate(
        self,
        model: Any,
        scorer: HeldOutTestScorer,
        then: Callable[[tuple[dict[str, np.ndarray], float]], None],
        *,
        priority: float = 0.0,
        label: Any = None,
    ) -> None:
        """Queue `scorer.evaluate(model)` (test users' per-user metrics and coverage): in a
        worker for a `RemoteModel` (the executor's split must be the scorer's), else here."""
        if self.here:
            self.add(scorer.evaluate, (model,), then, priority=priority, label=label)
            return
        if scorer.split.fingerprint != self.executor.key:
            raise ValueError("the scorer's split is not the one the pool's workers hold")
        args = (str(model.path), scorer.ks, scorer.coverage_k)
        alive = [model]  # the file lives as long as its RemoteModel: keep it until scored

        def done(result: Any) -> None:
            alive.clear()
            then(result)

        self.add(_evaluate_in_worker, args, done, priority=priority, label=label)

    def run(self) -> None:
        """Run until no job is queued or running.

        Raises:
            WorkerError: a job failed in a worker (the first failure; running jobs finish
                first, queued ones are dropped).
            Exception: whatever a ``then`` callback raised (after the running jobs finish).
        """
        failure: BaseException | None = None
        while self._ready or self._running:
            if failure is None:
                self._submit_ready()
            else:
                self._ready.clear()
            if not self._running:
                break
            failure = self._collect(failure)
        if failure is not None:
            raise failure

    # Submitting and collecting are methods of their own so that no local variable of `run`
    # keeps a finished job's future (and its result, e.g. a fitted model in this process)
    # alive while the next job runs.
    def _submit_ready(self) -> None:
        """Send queued jobs, highest priority first, while a worker is free."""
        while self._ready and len(self._running) < self.executor.n_workers:
            _, _, func, args, then, label = heapq.heappop(self._ready)
            future = self.executor.submit(func, *args)
            self._running[future] = (then, label, func, args, 0)
            self.submitted.append(label)

    def _collect(self, failure: BaseException | None) -> BaseException | None:
        """Wait for running jobs to finish; run each finished job's ``then`` (a lost job
        runs again instead); the first failure (``failure`` when there was one before)."""
        for future in self.executor.wait(list(self._running)):
            then, label, func, args, attempts = self._running.pop(future)
            if failure is not None:
                continue
            error = future.exception()
            if isinstance(error, WorkerLost) and attempts < LOST_RETRIES:
                log.warning("%s: %s; running it again", _text(label), error.reason)
                self.lost.append(label)
                again = self.executor.submit(func, *args)
                self._running[again] = (then, label, func, args, attempts + 1)
                continue
            if error is not None and self.here:
                failure = error  # this process's own exception, traceback and all
                continue
            if error is not None:
                detail = error if isinstance(error, WorkerLost) else _traceback(error)
                failure = WorkerError(f"{_text(label)} failed in a worker:\n{detail}")
                continue
            try:
                then(future.result())
            except Exception as exc:  # noqa: BLE001 - raised once the workers are idle
                failure = exc
        return failure


def _traceback(error: BaseException) -> str:
    return str(error).split(":\n", 1)[-1]


def _text(label: Any) -> str:
    return " ".join(str(part) for part in label) if isinstance(label, tuple) else str(label)


class RemoteModel:
    """A model fitted in a worker and saved to a temporary file; `score` runs in a worker.

    Attributes set on the fitted model that callers read (`total_anneal_steps_`) are copied.
    """

    def __init__(self, executor: Any, path: Path, attrs: dict[str, Any]) -> None:
        self.executor, self.path = executor, Path(path)
        for key, value in attrs.items():
            setattr(self, key, value)
        weakref.finalize(self, self.path.unlink, missing_ok=True)

    def score(self, x) -> np.ndarray:
        """Dense scores (users x items) of the fitted model, computed in a worker."""
        return run_all(self.executor, _score_in_worker, [(str(self.path), x)])[0]

    def save(self, path) -> Path:
        """Write the fitted model to `path` (a copy of the file the worker saved)."""
        if Path(path).suffix != self.path.suffix:
            raise ValueError(f"{path}: this model is saved as a {self.path.suffix} file")
        shutil.copyfile(self.path, path)
        return Path(path)


def _fit_here(split, model_name: str, params: dict, seed: int, patience: int | None):
    return fit_seed(split, model_name, params, seed, patience=patience)


def _fit_in_worker(model_name: str, params: dict, seed: int, patience: int | None, path: str):
    fit = fit_seed(worker_pool.shared(), model_name, params, seed, patience=patience)
    fit.model.save(path)
    attrs = {}
    if getattr(fit.model, "total_anneal_steps_", None) is not None:
        attrs["total_anneal_steps_"] = fit.model.total_anneal_steps_
    del fit.model
    free_model_memory()
    return fit.facts, fit.history, attrs


def _evaluate_in_worker(path: str, ks: tuple[int, ...], coverage_k: int):
    from harness.models import load_model

    model = load_model(path)
    result = HeldOutTestScorer(worker_pool.shared(), ks, coverage_k).evaluate(model)
    del model
    free_model_memory()
    return result


def _score_in_worker(path: str, x) -> np.ndarray:
    from harness.models import load_model

    model = load_model(path)
    scores = model.score(x)
    del model
    free_model_memory()
    return scores
