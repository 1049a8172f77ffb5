"""Ranking metrics for held-out users, one value per user (binary relevance by default).

Every metric takes a dense score matrix (users x items), the held-out CSR matrix and
optionally the fold-in CSR matrix whose items are excluded from the ranking. Work is done
on row batches with ``np.argpartition``; there is no Python loop over users.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

_BATCH_ROWS = 2048


def _check_inputs(scores: np.ndarray, heldout: sp.spmatrix, foldin: sp.spmatrix | None, k: int):
    if not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}: pass k >= 1 (e.g. k=100)")
    if scores.ndim != 2 or scores.shape != heldout.shape:
        raise ValueError(
            f"scores has shape {scores.shape} but the held-out matrix has shape {heldout.shape}: "
            "score exactly the held-out users (rows) over the split's item axis (columns)"
        )
    if foldin is not None and foldin.shape != heldout.shape:
        raise ValueError(
            f"fold-in matrix has shape {foldin.shape}, held-out has {heldout.shape}: "
            "pass the fold-in and held-out parts of the same users"
        )


def top_k_items(
    scores: np.ndarray, k: int, foldin: sp.spmatrix | None = None
) -> np.ndarray:
    """Indices of each row's k highest-scoring items, best first.

    Fold-in items (non-zeros of ``foldin``) get -inf and so rank last. Ties are broken by
    the lower item index (stable sort), so results are deterministic. ``k`` larger than the
    number of items is clipped to it.

    Returns:
        int array of shape (n_users, min(k, n_items)).
    """
    n_items = scores.shape[1]
    k = min(k, n_items)
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    for start in range(0, scores.shape[0], _BATCH_ROWS):
        stop = min(start + _BATCH_ROWS, scores.shape[0])
        block = np.array(scores[start:stop], dtype=np.float64, copy=True)
        if foldin is not None:
            fb = sp.csr_matrix(foldin[start:stop])
            rows = np.repeat(np.arange(stop - start), np.diff(fb.indptr))
            block[rows, fb.indices] = -np.inf
        if k < n_items:
            part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        else:
            part = np.tile(np.arange(n_items), (stop - start, 1))
        part_scores = np.take_along_axis(block, part, axis=1)
        # lexsort: primary key descending score, secondary ascending item index
        order = np.lexsort((part, -part_scores), axis=1)
        out[start:stop] = np.take_along_axis(part, order, axis=1)
    return out


def _relevance_at_ranks(heldout: sp.csr_matrix, top: np.ndarray, graded: bool) -> np.ndarray:
    """relevance of each recommended item (users x k), read from the held-out matrix."""
    heldout = sp.csr_matrix(heldout)
    rows = np.arange(top.shape[0])[:, None]
    rel = np.asarray(heldout[np.broadcast_to(rows, top.shape).ravel(), top.ravel()]).reshape(
        top.shape
    )
    rel = rel.astype(np.float64)
    return rel if graded else (rel > 0).astype(np.float64)


def ndcg_at_k(
    scores: np.ndarray,
    heldout: sp.spmatrix,
    foldin: sp.spmatrix | None = None,
    k: int = 100,
    *,
    graded: bool = False,
) -> np.ndarray:
    """NDCG@k per user: DCG@k / IDCG@k with DCG = sum_r rel_r / log2(r + 1).

    Binary relevance by default (IDCG over min(k, n_heldout) ones); ``graded=True`` uses the
    held-out matrix's values as gains and the ideal ordering of those values.

    Returns:
        float64 array, one value per user; NaN for a user with no held-out item.
    """
    _check_inputs(scores, heldout, foldin, k)
    heldout = sp.csr_matrix(heldout)
    top = top_k_items(scores, k, foldin)
    kk = top.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, kk + 2))
    rel = _relevance_at_ranks(heldout, top, graded)
    dcg = rel @ discounts
    n_rel = np.diff(heldout.indptr)
    if graded:
        idcg = np.zeros(heldout.shape[0])
        for start in range(0, heldout.shape[0], _BATCH_ROWS):
            block = heldout[start : start + _BATCH_ROWS].toarray()
            ideal = -np.sort(-block, axis=1)[:, :kk]
            idcg[start : start + _BATCH_ROWS] = ideal @ discounts[: ideal.shape[1]]
    else:
        cum = np.concatenate([[0.0], np.cumsum(discounts)])
        idcg = cum[np.minimum(n_rel, kk)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan)
