"""RP3beta (Paudel et al. 2017) as in Dacrema et al.'s evaluation code (``RP3betaRecommender``).

Item-item transition probabilities of a random walk item -> user -> item, with the target
item's popularity penalised:

    P_ui = X row-normalised (users x items),  P_iu = X^T row-normalised (items x users)
    W = (P_iu ** alpha) @ (P_ui ** alpha)   (element-wise powers of the non-zeros)
    W[i, j] /= popularity_j ** beta,  diag(W) = 0,  top-k entries per row kept,
    rows of W normalised to sum 1 (``normalize_similarity``).

A user with clicks x is scored x @ W (fold-in users included: nothing is trained on them).
W is computed once per configuration, ``block_rows`` items at a time (a dense block of
block_rows x n_items float32), so memory stays bounded at the ML-20M shape: W itself holds at
most n_items x topk entries.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from harness.models.baselines import OneShotRecommender
from harness.models.spec import NPZ_FORMATS, ModelSpec
from harness.models.validation import FitData

BLOCK_ROWS = 1024  # items per block: 1024 x 20k items x 4 B = 80 MB dense at ML-20M


def check_rp3beta_params(alpha, beta, topk, normalize_similarity) -> None:
    """One line naming the first bad parameter and its range."""
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, int | float)
        or not (math.isfinite(alpha) and alpha > 0)
    ):
        raise ValueError(f"alpha={alpha!r} must be a finite exponent > 0, e.g. 1.0")
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta <= 1:
        raise ValueError(f"beta={beta!r} must lie in [0, 1] (popularity penalty), e.g. 0.6")
    if isinstance(topk, bool) or not isinstance(topk, int | np.integer) or topk < 1:
        raise ValueError(f"topk={topk!r} must be an integer >= 1 (neighbours per item), e.g. 100")
    if not isinstance(normalize_similarity, bool | np.bool_):
        raise ValueError(f"normalize_similarity={normalize_similarity!r} must be true or false")


class RP3beta(OneShotRecommender):
    """RP3beta graph-based item-item recommender (see the module docstring).

    Args:
        alpha: exponent of the transition probabilities (Dacrema et al. search 0-2).
        beta: popularity penalty in [0, 1]: similarities to item j are divided by
            popularity_j ** beta.
        topk: neighbours kept per item.
        normalize_similarity: normalise each row of W to sum 1 after the top-k.
        k: cut-off of the validation NDCG@k.
        n_items: expected number of items (checked in fit).
    """

    _fitted_attr = "W_"
    _arrays = ("W_data_", "W_indices_", "W_indptr_")

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.6,
        topk: int = 100,
        normalize_similarity: bool = True,
        k: int = 100,
        *,
        n_items: int | None = None,
    ) -> None:
        super().__init__(k, n_items=n_items)
        check_rp3beta_params(alpha, beta, topk, normalize_similarity)
        self.alpha, self.beta, self.topk = alpha, beta, topk
        self.normalize_similarity = bool(normalize_similarity)

    def _fit(self, data: FitData) -> None:
        self.W_ = rp3beta_similarity(
            data.train, self.alpha, self.beta, self.topk, self.normalize_similarity
        )
        self.W_data_, self.W_indices_, self.W_indptr_ = (
            self.W_.data,
            self.W_.indices,
            self.W_.indptr,
        )

    def score(self, x) -> np.ndarray:
        x = self._require_fitted(x)
        return np.asarray((x @ self.W_).toarray(), dtype=np.float32)

    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "topk": self.topk,
                "normalize_similarity": self.normalize_similarity, "k": self.k}  # fmt: skip

    def _set_state(self, state: dict[str, Any]) -> None:
        n = int(self.n_items)
        self.W_ = sp.csr_matrix((self.W_data_, self.W_indices_, self.W_indptr_), shape=(n, n))


def _row_normalised(x: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums != 0)
    return sp.csr_matrix(sp.diags(scale) @ x)


def rp3beta_similarity(
    x: sp.csr_matrix,
    alpha: float,
    beta: float,
    topk: int,
    normalize_similarity: bool = True,
    block_rows: int = BLOCK_ROWS,
) -> sp.csr_matrix:
    """The RP3beta item-item matrix W (n_items x n_items CSR float32) of clicks ``x``."""
    x = sp.csr_matrix(x, dtype=np.float32)
    n_items = x.shape[1]
    binary = x.copy()
    binary.data[:] = 1.0
    p_ui = _row_normalised(x).astype(np.float32)
    p_iu = _row_normalised(binary.T.tocsr()).astype(np.float32)
    if alpha != 1:
        p_ui.data **= alpha
        p_iu.data **= alpha
    popularity = np.asarray(binary.sum(axis=0), dtype=np.float64).ravel()
    degree = np.zeros(n_items, np.float32)
    nonzero = popularity > 0
    degree[nonzero] = popularity[nonzero] ** -beta
    keep = min(topk, n_items)
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block_rows):
        stop = min(start + block_rows, n_items)
        block = (p_iu[start:stop] @ p_ui).toarray()
        block *= degree[None, :]
        block[np.arange(stop - start), np.arange(start, stop)] = 0.0  # no self-similarity
        if keep < n_items:
            top = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
        else:
            top = np.broadcast_to(np.arange(n_items), block.shape)
        values = np.take_along_axis(block, top, axis=1)
        nz = values != 0
        rows.append(np.repeat(np.arange(start, stop), nz.sum(axis=1)))
        cols.append(top[nz])
        vals.append(values[nz])
        del block
    w = sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32),
         (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
    )  # fmt: skip
    if normalize_similarity:
        w = _row_normalised(w).astype(np.float32)
    w.sort_indices()
    return w


MODEL_SPECS = (
    ModelSpec("rp3beta", RP3beta, iterative=False, seeded=False, has_beta=False,
              formats=NPZ_FORMATS),
)  # fmt: skip
