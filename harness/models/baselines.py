"""Reference baselines with the VAE API: item popularity and EASE (Steck 2019).

Both fit in one step, so their history has one epoch (epoch 0) with the validation NDCG
and NaN loss, val_loss, beta and lr; ``epoch_callback`` is called once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from harness.evaluation import ndcg_at_k, top_k_items
from harness.models.batching import top_to_csr, top_to_dense
from harness.models.callbacks import HISTORY_KEYS, EpochCallback
from harness.models.persistence import FORMAT, load_as, write_atomically
from harness.models.spec import NPZ_FORMATS, ModelSpec
from harness.models.validation import (
    FitData,
    as_click_matrix,
    check_fit_inputs,
    check_k,
    check_save_path,
)


class OneShotRecommender:
    """Shared API of closed-form models; subclasses implement ``_fit`` and ``score``."""

    def __init__(self, k: int = 100, *, n_items: int | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k={k!r} must be an integer >= 1, e.g. 100")
        self.k = k
        self.n_items = n_items
        self.best_epoch = 0
        self.best_ndcg = math.nan
        self._history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}

    def fit(
        self,
        x_train,
        x_valid=None,
        x_val_tr=None,
        x_val_te=None,
        mapper=None,
        *,
        epoch_callback: EpochCallback | None = None,
    ) -> OneShotRecommender:
        """Fit on ``x_train``; NDCG@k on (x_val_tr -> x_val_te) when given, else NaN.

        ``x_valid`` and ``mapper`` are accepted for API parity and unused. The callback's
        return value is ignored (there is nothing left to stop); its exceptions propagate.
        """
        data = check_fit_inputs(x_train, x_valid, x_val_tr, x_val_te, n_items=self.n_items)
        check_k(self.k, data.train.shape[1])
        self.n_items = data.train.shape[1]
        self._fit(data)
        self.best_ndcg = self._validation_ndcg(data)
        self._history = {key: [math.nan] for key in HISTORY_KEYS}
        self._history["ndcg"] = [self.best_ndcg]
        if epoch_callback is not None:
            epoch_callback(0, {key: values[0] for key, values in self._history.items()})
        return self

    def _fit(self, data: FitData) -> None:
        raise NotImplementedError

    def score(self, x) -> np.ndarray:
        """Dense float32 scores (users x items), raw, no masking."""
        raise NotImplementedError

    def _validation_ndcg(self, data: FitData) -> float:
        if data.val_tr is None:
            return math.nan
        per_user = ndcg_at_k(self.score(data.val_tr), data.val_te, data.val_tr, self.k)
        return float(np.nanmean(per_user)) if np.isfinite(per_user).any() else math.nan

    _fitted_attr = ""

    def _require_fitted(self, x) -> sp.csr_matrix:
        if not hasattr(self, self._fitted_attr):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(x_train) first")
        return as_click_matrix(x, "x", self.n_items)

    def history(self) -> dict[str, list[float]]:
        """One epoch of "ndcg", "loss", "val_loss", "beta", "lr" (all but ndcg NaN)."""
        return {key: list(values) for key, values in self._history.items()}

    def ndcg_per_epoch(self) -> list[float]:
        """[validation NDCG@k] after fit; [] before."""
        return list(self._history["ndcg"])

    def get_optimal_beta(self) -> float:
        """NaN: these models have no KL weight."""
        return math.nan

    def recommend_k_items(self, x, k: int, remove_seen: bool = True, *, sparse: bool = False):
        """Each row's top-k scores, 0 elsewhere, as the VAEs: a dense float32 array of
        ``x``'s shape, or CSR with exactly k explicit entries per row with ``sparse=True``.
        Seen items are never recommended with ``remove_seen`` (0 when a row has fewer than
        k unseen items)."""
        x = self._require_fitted(x)
        check_k(k, self.n_items)
        scores = self.score(x)
        top = top_k_items(scores, k, x if remove_seen else None)
        values = np.take_along_axis(scores, top, axis=1)
        if remove_seen:
            seen = np.asarray(x[np.arange(x.shape[0])[:, None], top].todense()) != 0
            values = np.where(seen, np.float32(0), values)
        if sparse:
            return top_to_csr(top, values, self.n_items)
        return top_to_dense(top, values, self.n_items)

    # --- persistence (format: harness.models.persistence) -------------------------------
    _arrays: tuple[str, ...] = ()

    def _params(self) -> dict[str, Any]:
        return {"k": self.k}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model to one ``.npz`` file (see ``harness.models.persistence``);
        ``harness.models.load_model`` reads it back.

        Raises:
            RuntimeError: not fitted.
            ValueError: the path does not end in ".npz", or its folder is missing or not
                writable.
        """
        if not hasattr(self, self._fitted_attr):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit before save")
        check_save_path(path, (".npz",))
        record = {
            "format": FORMAT, "class": type(self).__name__, "n_items": self.n_items,
            "params": self._params(), "history": self.history(),
            "best_ndcg": None if math.isnan(self.best_ndcg) else float(self.best_ndcg),
            "state": self._state(),
        }  # fmt: skip
        arrays = {name.rstrip("_"): getattr(self, name) for name in self._arrays}

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(
                    f, format=np.array(FORMAT), record=np.array(json.dumps(record)),
                    **{"class": np.array(type(self).__name__)}, **arrays,
                )  # fmt: skip

        write_atomically(path, write)
        return Path(path)

    def _state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        pass

    @classmethod
    def load(cls, path: str | os.PathLike) -> OneShotRecommender:
        """Load a file written by ``save``; ValueError if it holds another model class."""
        return load_as(path, cls, expected=cls)

    @classmethod
    def _from_record(cls, path: Path, record: dict[str, Any]) -> OneShotRecommender:
        model = cls(**record["params"], n_items=int(record["n_items"]))
        with np.load(path, allow_pickle=False) as data:
            for name in cls._arrays:
                setattr(model, name, data[name.rstrip("_")])
        history = record.get("history") or {}
        model._history = {key: list(history.get(key, [])) for key in HISTORY_KEYS}
        best = record.get("best_ndcg")
        model.best_ndcg = math.nan if best is None else float(best)
        model._set_state(record.get("state") or {})
        return model


class Popularity(OneShotRecommender):
    """Scores every user's items by their number of clicks among the training users."""

    _fitted_attr = "item_counts_"
    _arrays = ("item_counts_",)

    def _fit(self, data: FitData) -> None:
        self.item_counts_ = np.asarray(data.train.sum(axis=0), dtype=np.float32).ravel()

    def score(self, x) -> np.ndarray:
        x = self._require_fitted(x)
        return np.broadcast_to(self.item_counts_, x.shape).copy()


class EASE(OneShotRecommender):
    """EASE: B = I - P / diag(P), P = (X^T X + lam I)^-1, diag(B) = 0; scores = X B.

    Args:
        lam: L2 regularisation lambda (Steck uses 500 on ML-20M).
        k: cut-off of the validation NDCG@k.
        lambdas: when given, every value is tried and the one with the best validation
            NDCG@k is kept (needs x_val_tr/x_val_te); one eigendecomposition serves them all.
        n_items: expected number of items (checked in fit).

    Memory: about three n_items^2 float64 matrices while fitting (ML-20M: ~10 GB).
    The lambda used is ``lam_`` after fit; ``lambda_ndcg_`` maps each tried lambda to NDCG.
    """

    _fitted_attr = "B_"
    _arrays = ("B_",)

    def __init__(
        self,
        lam: float = 500.0,
        k: int = 100,
        *,
        lambdas: Sequence[float] | None = None,
        n_items: int | None = None,
    ) -> None:
        super().__init__(k, n_items=n_items)
        candidates = [lam] if lambdas is None else list(lambdas)
        if not candidates or not all(math.isfinite(v) and v > 0 for v in candidates):
            raise ValueError(f"EASE lambda(s) must be finite and > 0, got {candidates}")
        self.lam = lam
        self.lambdas = None if lambdas is None else list(lambdas)

    def _fit(self, data: FitData) -> None:
        gram = (data.train.T @ data.train).toarray().astype(np.float64)
        if self.lambdas is None:
            self.B_, self.lam_ = self._solve(gram, self.lam), self.lam
            return
        if data.val_tr is None:
            raise ValueError(
                "EASE(lambdas=...) picks lambda on validation users: pass x_val_tr and x_val_te"
            )
        eigvals, eigvecs = scipy.linalg.eigh(gram)
        self.lambda_ndcg_: dict[float, float] = {}
        best = -math.inf
        for lam in self.lambdas:
            self.B_ = _weights_from_inverse((eigvecs / (eigvals + lam)) @ eigvecs.T)
            ndcg = self._validation_ndcg(data)
            self.lambda_ndcg_[lam] = ndcg
            if ndcg > best:
                best, self.lam_, best_b = ndcg, lam, self.B_
        self.B_ = best_b

    def _params(self) -> dict[str, Any]:
        return {"lam": self.lam, "k": self.k, "lambdas": self.lambdas}

    def _state(self) -> dict[str, Any]:
        tried = getattr(self, "lambda_ndcg_", None)
        return {
            "lam_": float(self.lam_),
            "lambda_ndcg_": None if tried is None else [[k, v] for k, v in tried.items()],
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.lam_ = state.get("lam_", self.lam)
        if state.get("lambda_ndcg_") is not None:
            self.lambda_ndcg_ = {float(k): v for k, v in state["lambda_ndcg_"]}

    @staticmethod
    def _solve(gram: np.ndarray, lam: float) -> np.ndarray:
        gram[np.diag_indices_from(gram)] += lam
        inverse = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        return _weights_from_inverse(inverse)

    def score(self, x) -> np.ndarray:
        x = self._require_fitted(x)
        return np.asarray(x @ self.B_, dtype=np.float32)


def _weights_from_inverse(inverse: np.ndarray) -> np.ndarray:
    """B = -P / diag(P) column-wise with a zero diagonal, stored as float32."""
    weights = inverse / (-np.diag(inverse))
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


MODEL_SPECS = (
    ModelSpec("ease", EASE, iterative=False, seeded=False, has_beta=False, formats=NPZ_FORMATS),
    ModelSpec("popularity", Popularity, iterative=False, seeded=False, has_beta=False,
              formats=NPZ_FORMATS),
)  # fmt: skip
