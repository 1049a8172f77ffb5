"""Sparse click batches and the top-k helpers shared by every model.

Batches are cut from a CSR matrix and handed to TensorFlow as COO components (row ids,
item ids, values); the network consumes them as a ``tf.SparseTensor``. Nothing here
densifies more than the rows of one batch, and the training batches densify nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

Components = tuple[np.ndarray, np.ndarray, np.ndarray, int]
"""(row ids within the batch, item ids, values, number of rows): int32, int32, float32, int."""
BatchGroup = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Consecutive batches in one set of arrays: (row id within its batch, item id, value) per
stored entry (int32, int32, float32), then the batch boundaries as row offsets and entry
offsets (int32, each n_batches + 1 long, starting at 0): batch i holds rows
row_bounds[i]:row_bounds[i + 1] and entries entry_bounds[i]:entry_bounds[i + 1]."""


def row_ids(x: sp.csr_matrix) -> np.ndarray:
    """Row id of every stored entry of a CSR matrix (int32)."""
    return np.repeat(np.arange(x.shape[0], dtype=np.int32), np.diff(x.indptr))


def slice_components(x: sp.csr_matrix, rows: np.ndarray, start: int, stop: int) -> Components:
    """COO components of rows [start, stop) of ``x``; ``rows`` is ``row_ids(x)``."""
    lo, hi = x.indptr[start], x.indptr[stop]
    return (
        rows[lo:hi] - np.int32(start),
        x.indices[lo:hi].astype(np.int32, copy=False),
        x.data[lo:hi],
        stop - start,
    )


def chunks(x: sp.csr_matrix, size: int) -> Iterator[tuple[int, int, Components]]:
    """Yield (start, stop, components) for consecutive row blocks of at most ``size`` rows."""
    rows = row_ids(x)
    for start in range(0, x.shape[0], size):
        stop = min(start + size, x.shape[0])
        yield start, stop, slice_components(x, rows, start, stop)


class SparseBatches:
    """Training batches: a fresh shuffle every epoch, the last partial batch kept.

    The order comes from a seeded ``numpy.random.Generator`` owned by this object, so a
    seeded fit replays the same sequence of epochs while every epoch differs from the
    last (the seed replayed one order every epoch and dropped the last partial batch).

    Args:
        x: training clicks (CSR, float32, canonical).
        batch_size: users per batch.
        seed: seeds the shuffle; None = nondeterministic.
    """

    def __init__(self, x: sp.csr_matrix, batch_size: int, seed: int | None = None) -> None:
        self.x = x
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Batches per epoch: ceil(n_users / batch_size)."""
        return -(-self.x.shape[0] // self.batch_size)

    def _shuffled(self) -> sp.csr_matrix:
        # one permuted copy of the stored entries per epoch makes every batch a cheap slice
        return self.x[self.rng.permutation(self.x.shape[0])]

    def epoch(self) -> Iterator[Components]:
        """Yield the batches of one epoch in a new random order."""
        for _, _, components in chunks(self._shuffled(), self.batch_size):
            yield components

    def epoch_groups(self, max_clicks: int) -> Iterator[BatchGroup]:
        """Yield the batches of one epoch as runs of consecutive batches, for one compiled
        call per run instead of one per batch.

        The order is the one ``epoch`` would give (the same permutation is drawn), and the
        batch of a run holds the same entries as the batch ``epoch`` yields. A run holds as
        many whole batches as fit in ``max_clicks`` stored entries, at least one (so
        ``max_clicks=0`` gives one batch per run).
        """
        x = self._shuffled()
        n_users, size = x.shape[0], self.batch_size
        row_bounds = np.minimum(np.arange(0, n_users + size, size), n_users)
        entry_bounds = x.indptr[row_bounds]
        rows = row_ids(x) % np.int32(size)  # row within its batch: batches start at k * size
        cols = x.indices.astype(np.int32, copy=False)
        first, n_batches = 0, len(row_bounds) - 1
        while first < n_batches:
            last = first + 1  # one past the run's last batch
            while last < n_batches and entry_bounds[last + 1] - entry_bounds[first] <= max_clicks:
                last += 1
            lo, hi = entry_bounds[first], entry_bounds[last]
            yield (
                rows[lo:hi],
                cols[lo:hi],
                x.data[lo:hi],
                (row_bounds[first : last + 1] - row_bounds[first]).astype(np.int32),
                (entry_bounds[first : last + 1] - lo).astype(np.int32),
            )
            first = last


def ndcg_from_top(top: np.ndarray, heldout: sp.csr_matrix) -> np.ndarray:
    """Binary NDCG@k per user from ranked item indices (users x k), best first.

    Equal to ``harness.evaluation.ndcg_at_k`` on the scores those indices came from (a test
    checks it), but it never needs the dense score matrix, which is what makes per-epoch
    validation cheap. IDCG counts min(k, n_heldout) ones.

    Returns:
        float64 per user; NaN for a user with no held-out item.
    """
    n_users, kk = top.shape
    n_items = heldout.shape[1]
    keys = row_ids(heldout).astype(np.int64) * n_items + heldout.indices
    wanted = np.arange(n_users, dtype=np.int64)[:, None] * n_items + top
    pos = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    hits = keys[pos] == wanted if len(keys) else np.zeros(top.shape, dtype=bool)
    discounts = 1.0 / np.log2(np.arange(2, kk + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    n_rel = np.diff(heldout.indptr)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, (hits @ discounts) / ideal[np.minimum(n_rel, kk)], np.nan)


def top_to_csr(top: np.ndarray, values: np.ndarray, n_items: int) -> sp.csr_matrix:
    """CSR with exactly the given (index, value) entries per row, kept explicit.

    Built from (data, indices, indptr) directly, so a score of 0 or below (a Mult-VAE logit)
    stays an explicit entry; column indices are sorted within each row (canonical CSR), the
    rank order is in the values.
    """
    n_users, kk = top.shape
    order = np.argsort(top, axis=1, kind="stable")
    indices = np.take_along_axis(top, order, axis=1).astype(np.int32).ravel()
    data = np.take_along_axis(values, order, axis=1).astype(np.float32).ravel()
    indptr = np.arange(0, n_users * kk + 1, kk, dtype=np.int64)
    return sp.csr_matrix((data, indices, indptr), shape=(n_users, n_items))


def top_to_dense(top: np.ndarray, values: np.ndarray, n_items: int) -> np.ndarray:
    """Dense float32 (users x n_items): the given (index, value) entries, 0 elsewhere."""
    out = np.zeros((top.shape[0], n_items), dtype=np.float32)
    np.put_along_axis(out, top.astype(np.intp), values.astype(np.float32), axis=1)
    return out
