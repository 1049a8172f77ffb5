"""Batch iteration and the fast top-k NDCG used by the Metrics callback."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.evaluation import ndcg_at_k, top_k_items
from harness.models.batching import SparseBatches, ndcg_from_top, top_to_csr


def _tagged_rows(n_users: int) -> sp.csr_matrix:
    """Row u stores the value u + 1 in column u % 4, so a batch reveals which users it holds."""
    rows = np.arange(n_users)
    return sp.csr_matrix(((rows + 1).astype(np.float32), (rows, rows % 4)), shape=(n_users, 4))


def _users_per_batch(batches: SparseBatches) -> list[np.ndarray]:
    out = []
    for rows, _cols, values, n_rows in batches.epoch():
        assert len(np.unique(rows)) == n_rows  # every row of the batch holds its user
        out.append(values.astype(int) - 1)
    return out


def test_every_user_once_per_epoch_last_partial_batch_kept() -> None:
    batches = SparseBatches(_tagged_rows(23), batch_size=5, seed=3)
    assert len(batches) == 5
    first, second = _users_per_batch(batches), _users_per_batch(batches)
    assert [len(b) for b in first] == [5, 5, 5, 5, 3]
    assert sorted(np.concatenate(first)) == list(range(23))
    assert sorted(np.concatenate(second)) == list(range(23))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))  # reshuffled


def test_same_seed_same_order() -> None:
    a = _users_per_batch(SparseBatches(_tagged_rows(30), 7, seed=1))
    b = _users_per_batch(SparseBatches(_tagged_rows(30), 7, seed=1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@settings(max_examples=40, deadline=None)
@given(
    n_users=st.integers(1, 12),
    n_items=st.integers(1, 15),
    k=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_fast_ndcg_matches_reference(n_users: int, n_items: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = min(k, n_items)
    scores = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)  # with ties
    mask = rng.random((n_users, n_items))
    heldout = sp.csr_matrix((mask < 0.3).astype(np.float32))
    foldin = sp.csr_matrix(((mask >= 0.3) & (mask < 0.5)).astype(np.float32))
    top = top_k_items(scores, k, foldin)
    np.testing.assert_allclose(
        ndcg_from_top(top, heldout), ndcg_at_k(scores, heldout, foldin, k), equal_nan=True
    )


def test_top_to_csr_keeps_zero_and_negative_scores() -> None:
    top = np.array([[2, 0], [1, 3]])
    values = np.array([[0.0, -1.5], [-np.inf, 2.0]], dtype=np.float32)
    out = top_to_csr(top, values, 4)
    assert out.nnz == 4 and out.has_sorted_indices
    np.testing.assert_array_equal(out.indices, [0, 2, 1, 3])
    np.testing.assert_array_equal(out.data, [-1.5, 0.0, -np.inf, 2.0])


def test_sparse_matmul_value_and_gradient_match_dense(monkeypatch) -> None:
    import tensorflow as tf

    import harness.models.sparse_ops as sparse_ops

    rng = np.random.default_rng(0)
    dense = (rng.random((6, 9)) < 0.3) * rng.random((6, 9))
    dense[2] = 0.0  # an empty user
    coo = sp.coo_matrix(dense.astype(np.float32))
    x = tf.SparseTensor(np.stack([coo.row, coo.col], 1).astype(np.int64), coo.data, (6, 9))
    kernel = tf.Variable(rng.standard_normal((9, 4)).astype(np.float32))
    upstream = rng.standard_normal((6, 4)).astype(np.float32)
    for csr_ops in (sparse_ops._csr_ops, None):  # the CSR kernels and the public fallback
        monkeypatch.setattr(sparse_ops, "_csr_ops", csr_ops)
        with tf.GradientTape() as tape:
            out = sparse_ops.sparse_matmul(x, kernel)
            total = tf.reduce_sum(out * upstream)
        np.testing.assert_allclose(out.numpy(), dense @ kernel.numpy(), rtol=1e-5, atol=1e-6)
        grad = tf.convert_to_tensor(tape.gradient(total, kernel)).numpy()
        np.testing.assert_allclose(grad, dense.T @ upstream, rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    n_users=st.integers(1, 40),
    batch_size=st.integers(1, 12),
    max_clicks=st.sampled_from([0, 1, 7, 30, 10_000]),
    seed=st.integers(0, 2**16),
)
def test_epoch_groups_hold_the_batches_of_epoch(n_users, batch_size, max_clicks, seed) -> None:
    """Runs of batches (one compiled call each) cut the same batches, in the same order,
    as ``epoch`` does from the same seed; a run stays within max_clicks unless it is one
    batch."""
    rng = np.random.default_rng(seed)
    x = sp.csr_matrix((rng.random((n_users, 9)) < 0.4) * rng.integers(1, 5, (n_users, 9)),
                      dtype=np.float32)  # fmt: skip
    expected = list(SparseBatches(x, batch_size, seed).epoch())
    got = []
    for rows, cols, values, row_bounds, entry_bounds in SparseBatches(
        x, batch_size, seed
    ).epoch_groups(max_clicks):
        assert row_bounds[0] == 0 and entry_bounds[0] == 0 and entry_bounds[-1] == len(rows)
        assert len(row_bounds) == 2 or entry_bounds[-1] <= max_clicks
        for i in range(len(row_bounds) - 1):
            lo, hi = entry_bounds[i], entry_bounds[i + 1]
            got.append((rows[lo:hi], cols[lo:hi], values[lo:hi], row_bounds[i + 1] - row_bounds[i]))
    assert len(got) == len(expected) == -(-n_users // batch_size)
    for (r, c, v, n), (er, ec, ev, en) in zip(got, expected, strict=True):
        assert n == en and r.dtype == er.dtype == np.int32 and c.dtype == np.int32
        np.testing.assert_array_equal(r, er)
        np.testing.assert_array_equal(c, ec)
        np.testing.assert_array_equal(v, ev)
