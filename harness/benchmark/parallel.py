"""Benchmark fits dispatched to the shared worker pool (`harness.pool`), if one is open.

Every fit is seeded (and the models turn on TensorFlow's op determinism), so a fit gives the
same weights in a worker as in this process, whatever the thread count: results are
identical to a serial run. A fitted model can't cross processes cheaply, so a worker saves it
to a temporary `.keras` file (the model's own `save`) and returns that path with the fit's
facts and history. Scoring test users goes back to a worker, which loads the file
(`RemoteModel.score`); saving a final model copies the file (`RemoteModel.save`). The test
scorer in this process still sees one `score` call per scoring, so its accounting is
unchanged. The temporary file goes when its `RemoteModel` does.

Closed-form models (EASE, popularity) are fitted here: they take no seed and their weights
(an item x item matrix for EASE) are too big to ship.

`PoolScheduler` runs a graph of such jobs without barriers: jobs wait in a priority queue
here and go to a worker as soon as one is free (longest chain first); a finished job's
callback, run here, may add the jobs it unblocks. Test-user scoring can run as such a job
too (`PoolScheduler.evaluate`: the worker computes the per-user metrics from the file); the
caller then hands the result to the scorer (`HeldOutTestScorer.score(evaluated=...)`) in
its own, deterministic, order.
"""

from __future__ import annotations

import atexit
import heapq
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
from harness.benchmark.training import FitResult, HeldOutTestScorer, fit_seed, is_seeded
from harness.devices import free_model_memory

_FIT_DIR: Path | None = None


def _fit_dir() -> Path:
    """A process-wide temporary folder for the workers' fitted models (removed at exit)."""
    global _FIT_DIR
    if _FIT_DIR is None:
        _FIT_DIR = Path(tempfile.mkdtemp(prefix="harness-fits-"))
        atexit.register(shutil.rmtree, _FIT_DIR, ignore_errors=True)
    return _FIT_DIR


def fit_many(
    split, model_name: str, jobs: Sequence[tuple[dict[str, Any], int]], *, patience: int | None
) -> list[FitResult]:
    """`fit_seed(split, model_name, params, seed, patience=patience)` for each (params, seed)
    job, on the pool's workers when a pool for this split is open; results in job order."""
    pool = worker_pool.current_pool(split.fingerprint)
    if pool is None or not is_seeded(model_name):
        return [fit_seed(split, model_name, p, s, patience=patience) for p, s in jobs]
    paths = [_fit_path(model_name) for _ in jobs]
    args = [
        (model_name, p, s, patience, str(path)) for (p, s), path in zip(jobs, paths, strict=True)
    ]
    outs = pool.map(_fit_in_worker, args)
    return [_remote_fit(pool, path, out) for path, out in zip(paths, outs, strict=True)]


def _fit_path(model_name: str) -> Path:
    """A fresh temporary file for a worker's fitted model, in the model's own format."""
    from harness.models.registry import model_spec

    return _fit_dir() / f"{model_name}-{uuid.uuid4().hex}{model_spec(model_name).formats[0]}"


def open_pool(split) -> worker_pool.WorkerPool | None:
    """The shared pool whose workers hold ``split``, if one is open."""
    return worker_pool.current_pool(split.fingerprint)


def _remote_fit(pool: worker_pool.WorkerPool, path: Path, out: tuple) -> FitResult:
    facts, history, attrs = out
    return FitResult(RemoteModel(pool, path, attrs), facts, history)


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
    """Jobs on the pool's workers, highest priority first, one per idle worker; each
    finished job's ``then(result)`` runs here (in completion order) and may add jobs.

    Callers keep their outputs deterministic by storing results under their own keys in
    ``then`` and acting on them in a fixed order after `run`.

    Attributes:
        submitted: the ``label`` of every job, in the order it went to a worker.
    """

    def __init__(self, pool: worker_pool.WorkerPool) -> None:
        self.pool = pool
        self.submitted: list[Any] = []
        self._ready: list[tuple] = []  # heap of (-priority, sequence, func, args, then, label)
        self._running: dict[int, tuple[Callable[[Any], None], Any]] = {}
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
        """Queue `fit_seed` of a seeded model; ``then`` gets its `FitResult` (a
        `RemoteModel`)."""
        if not is_seeded(model_name):
            raise ValueError(f"{model_name} is fitted in this process, not on the pool")
        path = _fit_path(model_name)
        self.add(
            _fit_in_worker,
            (model_name, params, seed, patience, str(path)),
            lambda out: then(_remote_fit(self.pool, path, out)),
            priority=priority,
            label=label,
        )

    def evaluate(
        self,
        model: RemoteModel,
        scorer: HeldOutTestScorer,
        then: Callable[[tuple[dict[str, np.ndarray], float]], None],
        *,
        priority: float = 0.0,
        label: Any = None,
    ) -> None:
        """Queue `scorer.evaluate(model)` (test users' per-user metrics and coverage) in a
        worker; the pool's split must be the scorer's."""
        if scorer.split.fingerprint != self.pool.key:
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
            while failure is None and self._ready and len(self._running) < self.pool.n_workers:
                _, _, func, args, then, label = heapq.heappop(self._ready)
                self._running[self.pool.submit(func, args)] = (then, label)
                self.submitted.append(label)
            if failure is not None:
                self._ready.clear()
            if not self._running:
                break
            for ticket, ok, value in self.pool.poll(None):
                then, label = self._running.pop(ticket)
                if failure is not None:
                    continue
                if not ok:
                    failure = worker_pool.WorkerError(f"{label} failed in a worker:\n{value}")
                    continue
                try:
                    then(value)
                except Exception as exc:  # noqa: BLE001 - raised once the workers are idle
                    failure = exc
        if failure is not None:
            raise failure


class RemoteModel:
    """A model fitted in a worker and saved to a temporary file; `score` runs in a worker.

    Attributes set on the fitted model that callers read (`total_anneal_steps_`) are copied.
    """

    def __init__(self, pool: worker_pool.WorkerPool, path: Path, attrs: dict[str, Any]) -> None:
        self.pool, self.path = pool, Path(path)
        for key, value in attrs.items():
            setattr(self, key, value)
        weakref.finalize(self, self.path.unlink, missing_ok=True)

    def score(self, x) -> np.ndarray:
        """Dense scores (users x items) of the fitted model, computed in a worker."""
        return self.pool.map(_score_in_worker, [(str(self.path), x)])[0]

    def save(self, path) -> Path:
        """Write the fitted model to `path` (a copy of the file the worker saved)."""
        if Path(path).suffix != self.path.suffix:
            raise ValueError(f"{path}: this model is saved as a {self.path.suffix} file")
        shutil.copyfile(self.path, path)
        return Path(path)


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
