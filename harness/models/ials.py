"""iALS (Hu et al. 2008; tuned as in Rendle et al. 2021) through the ``implicit`` library.

Training users are factorised by ``implicit.cpu.als.AlternatingLeastSquares`` (confidence
``alpha`` on a click, 1 elsewhere; L2 ``regularization``; ``iterations`` sweeps; random
initial factors from ``seed``). A fold-in user is never trained on: its factors come from
the closed-form least-squares step given the item factors (implicit's
``recalculate_user``: x_u = (Y^T C_u Y + reg I)^-1 Y^T C_u p_u, a Cholesky solve), and its
scores are x_u @ Y^T.

Threads follow the worker layout: ``TF_NUM_INTRAOP_THREADS`` (set by ``harness.pool`` for
each worker), else 1, unless ``num_threads`` is given.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from typing import Any

import numpy as np

from harness.models.baselines import OneShotRecommender
from harness.models.spec import NPZ_FORMATS, ModelSpec
from harness.models.validation import FitData, MissingDependencyError, as_click_matrix

SCORE_ROWS = 4096  # users folded in at once


def worker_threads() -> int:
    """Threads of this worker: ``TF_NUM_INTRAOP_THREADS`` when set (> 0), else 1."""
    try:
        n = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0"))
    except ValueError:
        n = 0
    return n if n > 0 else 1


def _positive(value, name: str, example: str, *, integer: bool = False, zero: bool = False):
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}={value!r} must be a number, e.g. {example}")
    if integer and not float(value).is_integer():
        raise ValueError(f"{name}={value!r} must be an integer, e.g. {example}")
    low_ok = value >= 0 if zero else value > 0
    if not (math.isfinite(value) and low_ok):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{name}={value!r} must be finite and {bound}, e.g. {example}")


class IALS(OneShotRecommender):
    """Implicit ALS matrix factorisation with fold-in of unseen users.

    Args:
        factors: latent dimensions.
        regularization: L2 weight on user and item factors (>= 0).
        alpha: confidence of a click (implicit's ``alpha``; unobserved entries weigh 1).
        iterations: ALS sweeps (users then items).
        seed: seeds the random initial factors (None: nondeterministic).
        k: cut-off of the validation NDCG@k.
        num_threads: threads of the solver; None = the worker's (see the module docstring).
        n_items: expected number of items (checked in fit).
    """

    _fitted_attr = "item_factors_"
    _arrays = ("item_factors_",)

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int | None = None,
        k: int = 100,
        *,
        num_threads: int | None = None,
        n_items: int | None = None,
    ) -> None:
        super().__init__(k, n_items=n_items)
        _positive(factors, "factors", "64", integer=True)
        _positive(regularization, "regularization", "0.01", zero=True)
        _positive(alpha, "alpha", "10")
        _positive(iterations, "iterations", "15", integer=True)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise ValueError(f"seed={seed!r} must be an integer or None")
        if num_threads is not None:
            _positive(num_threads, "num_threads", "1", integer=True)
        self.factors, self.regularization = int(factors), float(regularization)
        self.alpha, self.iterations, self.seed = float(alpha), int(iterations), seed
        self.num_threads = num_threads

    def _solver(self):
        try:  # a default dependency; a broken install gets one line
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError:
            raise MissingDependencyError(
                "model 'ials' needs the package 'implicit', which is not installed: "
                "pip install implicit (a dependency of vae-sweep)"
            ) from None

        threads = self.num_threads or worker_threads()
        with warnings.catch_warnings():  # implicit warns when BLAS runs several threads
            warnings.simplefilter("ignore", RuntimeWarning)
            logging.getLogger("implicit").setLevel(logging.ERROR)
            return AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                iterations=self.iterations, random_state=self.seed, num_threads=threads,
                dtype=np.float32, use_cg=True, calculate_training_loss=False,
            )  # fmt: skip

    def _fit(self, data: FitData) -> None:
        solver = self._solver()
        solver.fit(data.train, show_progress=False)
        self.item_factors_ = np.ascontiguousarray(solver.item_factors, dtype=np.float32)
        self._fold_in = solver

    def user_factors(self, x) -> np.ndarray:
        """Factors of users with clicks ``x`` (closed-form solve given the item factors)."""
        x = self._require_fitted(x)
        solver = getattr(self, "_fold_in", None)
        if solver is None:  # a loaded model: a solver around the saved item factors
            solver = self._solver()
            solver.item_factors = self.item_factors_
            self._fold_in = solver
        out = np.empty((x.shape[0], self.factors), np.float32)
        for start in range(0, x.shape[0], SCORE_ROWS):
            part = x[start : start + SCORE_ROWS]
            out[start : start + part.shape[0]] = solver.recalculate_user(
                np.arange(part.shape[0]), part
            )
        return out

    def score(self, x) -> np.ndarray:
        x = as_click_matrix(self._require_fitted(x), "x", self.n_items)
        return np.asarray(self.user_factors(x) @ self.item_factors_.T, dtype=np.float32)

    def _params(self) -> dict[str, Any]:
        return {"factors": self.factors, "regularization": self.regularization,
                "alpha": self.alpha, "iterations": self.iterations, "seed": self.seed,
                "k": self.k, "num_threads": self.num_threads}  # fmt: skip


# one fit of all iterations (no per-epoch NDCG); the random initial factors make it seeded
MODEL_SPECS = (
    ModelSpec("ials", IALS, iterative=False, seeded=True, has_beta=False, formats=NPZ_FORMATS,
              module="implicit"),
)  # fmt: skip
