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
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness import pool as worker_pool
from harness.benchmark.training import SEEDED_MODELS, FitResult, fit_seed

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
    if pool is None or model_name not in SEEDED_MODELS:
        return [fit_seed(split, model_name, p, s, patience=patience) for p, s in jobs]
    paths = [_fit_dir() / f"{model_name}-{uuid.uuid4().hex}.keras" for _ in jobs]
    args = [
        (model_name, p, s, patience, str(path)) for (p, s), path in zip(jobs, paths, strict=True)
    ]
    outs = pool.map(_fit_in_worker, args)
    return [
        FitResult(RemoteModel(pool, path, attrs), facts, history)
        for path, (facts, history, attrs) in zip(paths, outs, strict=True)
    ]


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
        if not str(path).endswith(".keras"):
            raise ValueError(f"{path}: a VAE is saved as a .keras file")
        shutil.copyfile(self.path, path)
        return Path(path)


def _fit_in_worker(model_name: str, params: dict, seed: int, patience: int | None, path: str):
    fit = fit_seed(worker_pool.shared(), model_name, params, seed, patience=patience)
    fit.model.save(path)
    attrs = {}
    if getattr(fit.model, "total_anneal_steps_", None) is not None:
        attrs["total_anneal_steps_"] = fit.model.total_anneal_steps_
    del fit.model
    _clear_keras()
    return fit.facts, fit.history, attrs


def _score_in_worker(path: str, x) -> np.ndarray:
    from harness.models import load_model

    model = load_model(path)
    scores = model.score(x)
    del model
    _clear_keras()
    return scores


def _clear_keras() -> None:
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.backend.clear_session()
