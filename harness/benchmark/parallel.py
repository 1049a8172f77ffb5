"""Benchmark fits dispatched to the shared worker pool (`harness.pool`), if one is open.

Every fit is seeded (and the models turn on TensorFlow's op determinism), so a fit gives the
same weights in a worker as in this process, whatever the thread count: results are
identical to a serial run. A fitted model can't cross processes cheaply, so a worker returns
the fit's facts, history and weights; scoring test users goes back to a worker, which
rebuilds the model with those weights (`RemoteModel.score`). The test scorer in this process
still sees one `score` call per scoring, so its accounting is unchanged.

Closed-form models (EASE, popularity) are fitted here: they take no seed and their weights
(an item x item matrix for EASE) are too big to ship.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness import pool as worker_pool
from harness.benchmark.training import SEEDED_MODELS, FitResult, fit_seed


def fit_many(
    split, model_name: str, jobs: Sequence[tuple[dict[str, Any], int]], *, patience: int | None
) -> list[FitResult]:
    """`fit_seed(split, model_name, params, seed, patience=patience)` for each (params, seed)
    job, on the pool's workers when a pool for this split is open; results in job order."""
    pool = worker_pool.current_pool(split.fingerprint)
    if pool is None or model_name not in SEEDED_MODELS:
        return [fit_seed(split, model_name, p, s, patience=patience) for p, s in jobs]
    outs = pool.map(_fit_in_worker, [(model_name, p, s, patience) for p, s in jobs])
    return [
        FitResult(RemoteModel(pool, model_name, params, seed, weights, attrs), facts, history)
        for (params, seed), (facts, history, weights, attrs) in zip(jobs, outs, strict=True)
    ]


class RemoteModel:
    """A model fitted in a worker: its weights; `score` runs in a worker.

    Attributes set on the fitted model that callers read (`total_anneal_steps_`) are copied.
    """

    def __init__(
        self,
        pool: worker_pool.WorkerPool,
        model_name: str,
        params: dict[str, Any],
        seed: int,
        weights: list[np.ndarray],
        attrs: dict[str, Any],
    ) -> None:
        self.pool, self.model_name, self.params, self.seed = pool, model_name, params, seed
        self.weights = weights
        for key, value in attrs.items():
            setattr(self, key, value)

    def score(self, x) -> np.ndarray:
        """Dense scores (users x items) of the fitted model, computed in a worker."""
        job = (self.model_name, self.params, self.seed, self.weights, x)
        return self.pool.map(_score_in_worker, [job])[0]


def _model_params(model_name: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    # as fit_seed builds the model
    params = {k: v for k, v in params.items() if k != "name"}
    return {**params, "seed": seed, "verbose": 0, "save_path": None}


def _fit_in_worker(model_name: str, params: dict, seed: int, patience: int | None) -> tuple:
    fit = fit_seed(worker_pool.shared(), model_name, params, seed, patience=patience)
    weights = fit.model.network.get_weights()
    attrs = {}
    if getattr(fit.model, "total_anneal_steps_", None) is not None:
        attrs["total_anneal_steps_"] = fit.model.total_anneal_steps_
    del fit.model
    _clear_keras()
    return fit.facts, fit.history, weights, attrs


def _score_in_worker(model_name: str, params: dict, seed: int, weights: list, x) -> np.ndarray:
    from harness.models import build_model

    split = worker_pool.shared()
    model = build_model(
        model_name, split.n_train_users, split.n_items, **_model_params(model_name, params, seed)
    )
    model.network.set_weights(weights)
    scores = model.score(x)
    del model
    _clear_keras()
    return scores


def _clear_keras() -> None:
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.backend.clear_session()
