"""Ranking metrics for held-out users, one value per user (binary relevance by default).

Every metric takes a dense score matrix (users x items), the held-out CSR matrix and
optionally the fold-in CSR matrix whose items are excluded from the ranking. Work is done
on row batches with ``np.argpartition``; there is no Python loop over users.

Conventions shared by all metrics:

* Ranking: higher score first; ties go to the lower item index; NaN scores rank after every
  number; fold-in items rank last. ``k`` larger than the catalogue is clipped to it.
* Relevance: a held-out item is relevant when its stored value is > 0 (explicit zeros are not).
* A user with no relevant held-out item gets NaN, never a silent 0, so averages must use
  ``np.nanmean`` and the count of evaluated users is visible.
* Fold-in and held-out items are expected to be disjoint (the protocol guarantees it); a
  held-out item that is also in the fold-in part can never be hit but still counts in the
  denominators.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

# 1024 rows x 20k items keeps a batch (scores copy + argpartition's int64 output) near 250 MB.
_BATCH_ROWS = 1024


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


def _negated_block(scores: np.ndarray, start: int, stop: int, foldin: sp.spmatrix | None):
    """-scores of rows [start, stop) so that ascending order is best first; NaN and fold-in
    items become +inf (rank last). float32 stays float32: halving the bandwidth matters more
    than precision here, and float64 inputs stay float64 so no ties are invented."""
    dtype = np.result_type(scores.dtype, np.float32)
    block = np.negative(np.asarray(scores[start:stop], dtype=dtype))
    if np.isnan(block.sum()):  # a sum is much cheaper than isnan over the whole block
        block[np.isnan(block)] = np.inf
    if foldin is not None:
        fb = sp.csr_matrix(foldin[start:stop])
        rows = np.repeat(np.arange(stop - start), np.diff(fb.indptr))
        block[rows, fb.indices] = np.inf
    return block


def top_k_items(scores: np.ndarray, k: int, foldin: sp.spmatrix | None = None) -> np.ndarray:
    """Indices of each row's k highest-scoring items, best first.

    Fold-in items (non-zeros of ``foldin``) rank last, as do NaN scores. Ties are broken by
    the lower item index, also at the k-th place, so results are deterministic. ``k`` larger
    than the number of items is clipped to it.

    Returns:
        int64 array of shape (n_users, min(k, n_items)).
    """
    n_items = scores.shape[1]
    k = min(k, n_items)
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    for start in range(0, scores.shape[0], _BATCH_ROWS):
        stop = min(start + _BATCH_ROWS, scores.shape[0])
        block = _negated_block(scores, start, stop, foldin)
        if k < n_items:
            part = np.argpartition(block, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n_items), block.shape)
        part_keys = np.take_along_axis(block, part, axis=1)
        order = np.lexsort((part, part_keys), axis=1)  # by score, then by item index
        top = np.take_along_axis(part, order, axis=1)
        if k < n_items:
            # argpartition picks arbitrary members of a tie at the k-th place; redo those rows
            # with a stable full sort (rare for real-valued scores, so this is cheap).
            kth = part_keys.max(axis=1, keepdims=True)
            n_le = np.count_nonzero(block <= kth, axis=1)
            tied = np.flatnonzero(n_le > k)
            if tied.size:
                top[tied] = np.argsort(block[tied], axis=1, kind="stable")[:, :k]
        out[start:stop] = top
    return out


def _relevance_at_ranks(heldout: sp.csr_matrix, top: np.ndarray) -> np.ndarray:
    """Held-out value of each recommended item (users x k), 0 where not held out.

    Looks the (row, item) pairs up by binary search in the CSR's sorted linear keys, which
    avoids densifying the held-out matrix and scipy's slow fancy indexing.
    """
    heldout = heldout.copy()
    heldout.sort_indices()
    n_items = np.int64(heldout.shape[1])
    rows = np.repeat(np.arange(heldout.shape[0], dtype=np.int64), np.diff(heldout.indptr))
    keys = rows * n_items + heldout.indices
    wanted = (np.arange(top.shape[0], dtype=np.int64)[:, None] * n_items + top).ravel()
    pos = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
    found = keys[pos] == wanted if keys.size else np.zeros(wanted.shape, dtype=bool)
    values = heldout.data[pos] if keys.size else np.zeros(wanted.shape)
    return np.where(found, values, 0).astype(np.float64).reshape(top.shape)


def _ideal_gains(heldout: sp.csr_matrix, kk: int, discounts: np.ndarray) -> np.ndarray:
    """Graded IDCG@kk per user: the user's held-out values sorted descending, discounted."""
    rows = np.repeat(np.arange(heldout.shape[0]), np.diff(heldout.indptr))
    vals = np.clip(heldout.data.astype(np.float64), 0, None)
    order = np.lexsort((-vals, rows))
    rows, vals = rows[order], vals[order]
    rank = np.arange(rows.size) - np.repeat(heldout.indptr[:-1], np.diff(heldout.indptr))
    keep = rank < kk
    return np.bincount(
        rows[keep], weights=vals[keep] * discounts[rank[keep]], minlength=heldout.shape[0]
    )


class _Ranked:
    """One top-k computation shared by every metric and cut-off."""

    def __init__(
        self,
        scores: np.ndarray,
        heldout: sp.spmatrix,
        foldin: sp.spmatrix | None,
        k: int,
        graded: bool,
    ) -> None:
        _check_inputs(scores, heldout, foldin, k)
        self.heldout = sp.csr_matrix(heldout)
        self.gains = _relevance_at_ranks(self.heldout, top_k_items(scores, k, foldin))
        self.rel = (self.gains > 0).astype(np.float64)
        if not graded:
            self.gains = self.rel
        self.graded = graded
        self.n_rel = np.diff(sp.csr_matrix(self.heldout > 0).indptr)
        self.discounts = 1.0 / np.log2(np.arange(2, self.rel.shape[1] + 2))

    def _per_user(self, values: np.ndarray) -> np.ndarray:
        return np.where(self.n_rel > 0, values, np.nan)

    def _cut(self, k: int) -> tuple[int, np.ndarray]:
        kk = min(k, self.rel.shape[1])
        return kk, self.rel[:, :kk]

    def ndcg(self, k: int) -> np.ndarray:
        kk = min(k, self.rel.shape[1])
        dcg = self.gains[:, :kk] @ self.discounts[:kk]
        if self.graded:
            idcg = _ideal_gains(self.heldout, kk, self.discounts)
        else:
            idcg = np.concatenate([[0.0], np.cumsum(self.discounts[:kk])])[
                np.minimum(self.n_rel, kk)
            ]
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._per_user(dcg / np.where(idcg > 0, idcg, 1.0))

    def hits(self, k: int) -> np.ndarray:
        return self._cut(k)[1].sum(axis=1)

    def recall(self, k: int) -> np.ndarray:
        kk = min(k, self.rel.shape[1])
        return self._per_user(self.hits(k) / np.maximum(np.minimum(self.n_rel, kk), 1))

    def recall_std(self, k: int) -> np.ndarray:
        return self._per_user(self.hits(k) / np.maximum(self.n_rel, 1))

    def precision(self, k: int) -> np.ndarray:
        kk, rel = self._cut(k)
        return self._per_user(rel.sum(axis=1) / kk)

    def map(self, k: int) -> np.ndarray:
        kk, rel = self._cut(k)
        precision_at_r = np.cumsum(rel, axis=1) / np.arange(1, kk + 1)
        ap = (precision_at_r * rel).sum(axis=1) / np.maximum(np.minimum(self.n_rel, kk), 1)
        return self._per_user(ap)

    def hit(self, k: int) -> np.ndarray:
        return self._per_user((self.hits(k) > 0).astype(np.float64))


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
    return _Ranked(scores, heldout, foldin, k, graded).ndcg(k)


def recall_at_k(
    scores: np.ndarray, heldout: sp.spmatrix, foldin: sp.spmatrix | None = None, k: int = 100
) -> np.ndarray:
    """Liang et al.'s truncated recall: hits@k / min(k, n_heldout), so 1 is reachable.

    Returns:
        float64 array per user; NaN for a user with no held-out item.
    """
    return _Ranked(scores, heldout, foldin, k, False).recall(k)


def standard_recall_at_k(
    scores: np.ndarray, heldout: sp.spmatrix, foldin: sp.spmatrix | None = None, k: int = 100
) -> np.ndarray:
    """Standard recall: hits@k / n_heldout (below 1 whenever n_heldout > k).

    Returns:
        float64 array per user; NaN for a user with no held-out item.
    """
    return _Ranked(scores, heldout, foldin, k, False).recall_std(k)


def precision_at_k(
    scores: np.ndarray, heldout: sp.spmatrix, foldin: sp.spmatrix | None = None, k: int = 100
) -> np.ndarray:
    """Precision: hits@k / k, where k is clipped to the number of items.

    Returns:
        float64 array per user; NaN for a user with no held-out item.
    """
    return _Ranked(scores, heldout, foldin, k, False).precision(k)


def map_at_k(
    scores: np.ndarray, heldout: sp.spmatrix, foldin: sp.spmatrix | None = None, k: int = 100
) -> np.ndarray:
    """Average precision at k: sum over hit ranks r <= k of precision@r, / min(k, n_heldout).

    The min(k, n_heldout) denominator (as in LensKit and most recsys papers) makes a perfect
    top-k score 1 even when a user has more than k held-out items.

    Returns:
        float64 array per user; NaN for a user with no held-out item.
    """
    return _Ranked(scores, heldout, foldin, k, False).map(k)


def hit_rate_at_k(
    scores: np.ndarray, heldout: sp.spmatrix, foldin: sp.spmatrix | None = None, k: int = 100
) -> np.ndarray:
    """Hit rate: 1.0 if any held-out item is in the top k, else 0.0.

    Returns:
        float64 array per user; NaN for a user with no held-out item.
    """
    return _Ranked(scores, heldout, foldin, k, False).hit(k)


def catalogue_coverage(
    scores: np.ndarray, foldin: sp.spmatrix | None = None, k: int = 100
) -> float:
    """Share of the catalogue (score columns) recommended in at least one user's top k.

    Returns:
        float in [0, 1]; 0.0 when there are no users.
    """
    if not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}: pass k >= 1 (e.g. k=100)")
    if scores.shape[1] == 0:
        return 0.0
    top = top_k_items(scores, k, foldin)
    return float(np.unique(top).size / scores.shape[1])


_FAMILIES = {
    "ndcg": _Ranked.ndcg,
    "recall": _Ranked.recall,
    "recall_std": _Ranked.recall_std,
    "precision": _Ranked.precision,
    "map": _Ranked.map,
    "hit": _Ranked.hit,
}


def evaluate_all(
    scores: np.ndarray,
    heldout: sp.spmatrix,
    foldin: sp.spmatrix | None = None,
    ks: Sequence[int] = (10, 20, 50, 100),
    *,
    graded: bool = False,
) -> dict[str, np.ndarray]:
    """Every per-user metric at every cut-off from a single top-max(ks) ranking.

    Args:
        scores: dense (users x items) scores, higher is better.
        heldout: CSR (users x items), the relevant items (values are gains if ``graded``).
        foldin: optional CSR of items to exclude from the ranking.
        ks: cut-offs; each must be a positive integer.
        graded: use held-out values as gains for NDCG (other metrics stay binary).

    Returns:
        dict with keys ``ndcg@k``, ``recall@k`` (truncated), ``recall_std@k``,
        ``precision@k``, ``map@k``, ``hit@k`` for each k; values are float64 arrays with NaN
        for users without a held-out item.
    """
    ks = list(ks)
    if not ks:
        raise ValueError("ks is empty: pass at least one cut-off, e.g. ks=(10, 100)")
    for k in ks:
        _check_inputs(scores, heldout, foldin, k)
    ranked = _Ranked(scores, heldout, foldin, max(ks), graded)
    return {f"{name}@{k}": fn(ranked, k) for k in ks for name, fn in _FAMILIES.items()}
