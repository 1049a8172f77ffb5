"""Metrics against a slow, obviously correct per-user reference, plus hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.evaluation import metrics as M
from harness.evaluation.metrics import (
    catalogue_coverage,
    evaluate_all,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    standard_recall_at_k,
    top_k_items,
)


def ref_ranking(scores_row, foldin_row: set[int], k: int) -> list[int]:
    """Higher score first, then lower item index; fold-in items last."""
    items = range(len(scores_row))
    key = [(1, 0.0, j) if j in foldin_row else (0, -float(scores_row[j]), j) for j in items]
    return [j for *_, j in sorted(key)][:k]


def ref_metrics(scores, heldout, foldin, k: int, graded: bool = False) -> dict[str, list]:
    out: dict[str, list] = {n: [] for n in ("ndcg", "recall", "recall_std", "precision")}
    out.update({"map": [], "hit": []})
    for u in range(scores.shape[0]):
        row = heldout[u].toarray().ravel()
        truth = {j: float(row[j]) for j in range(row.size)}
        truth = {j: v for j, v in truth.items() if v > 0}
        fold = set(foldin[u].nonzero()[1].tolist()) if foldin is not None else set()
        ranked = ref_ranking(scores[u], fold, k)
        kk = len(ranked)
        if not truth:
            for values in out.values():
                values.append(math.nan)
            continue
        gain = [truth.get(j, 0.0) if graded else float(j in truth) for j in ranked]
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gain))
        ideal = sorted(truth.values() if graded else [1.0] * len(truth), reverse=True)[:kk]
        idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
        hits = [float(j in truth) for j in ranked]
        n_hits = sum(hits)
        ap = sum(sum(hits[: r + 1]) / (r + 1) for r in range(kk) if hits[r])
        out["ndcg"].append(dcg / idcg)
        out["recall"].append(n_hits / min(kk, len(truth)))
        out["recall_std"].append(n_hits / len(truth))
        out["precision"].append(n_hits / kk)
        out["map"].append(ap / min(kk, len(truth)))
        out["hit"].append(float(n_hits > 0))
    return out


@st.composite
def eval_case(draw):
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 15))
    # few distinct values, so ties (also at the k-th place) are common
    scores = np.array(
        draw(
            st.lists(
                st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0]),
                min_size=n_users * n_items,
                max_size=n_users * n_items,
            )
        ),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
    ).reshape(n_users, n_items)
    cell = st.sampled_from([0, 0, 0, 1, 2])  # 0 nothing, 1 fold-in, 2 held-out
    kinds = np.array(draw(st.lists(cell, min_size=scores.size, max_size=scores.size)))
    kinds = kinds.reshape(scores.shape)
    grades = np.array(
        draw(st.lists(st.sampled_from([1.0, 2.0, 5.0]), min_size=scores.size, max_size=scores.size))
    )
    heldout = sp.csr_matrix(np.where(kinds == 2, grades.reshape(scores.shape), 0.0))
    foldin = sp.csr_matrix((kinds == 1).astype(np.float32)) if draw(st.booleans()) else None
    return scores, heldout, foldin, draw(st.integers(1, n_items + 3))


def _close(actual, expected):
    np.testing.assert_allclose(actual, np.array(expected, dtype=float), rtol=1e-9, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(eval_case(), st.booleans())
def test_all_metrics_match_reference(case, graded):
    scores, heldout, foldin, k = case
    ref = ref_metrics(scores, heldout, foldin, k, graded)
    _close(ndcg_at_k(scores, heldout, foldin, k, graded=graded), ref["ndcg"])
    binary = ref_metrics(scores, heldout, foldin, k)
    _close(recall_at_k(scores, heldout, foldin, k), binary["recall"])
    _close(standard_recall_at_k(scores, heldout, foldin, k), binary["recall_std"])
    _close(precision_at_k(scores, heldout, foldin, k), binary["precision"])
    _close(map_at_k(scores, heldout, foldin, k), binary["map"])
    _close(hit_rate_at_k(scores, heldout, foldin, k), binary["hit"])


@settings(max_examples=60, deadline=None)
@given(eval_case())
def test_evaluate_all_equals_single_metrics_and_topk_reference(case):
    scores, heldout, foldin, k = case
    ks = sorted({1, k, k + 2})
    result = evaluate_all(scores, heldout, foldin, ks=ks)
    assert set(result) == {f"{m}@{c}" for c in ks for m in M._FAMILIES}
    for c in ks:
        ref = ref_metrics(scores, heldout, foldin, c)
        for name in M._FAMILIES:
            _close(result[f"{name}@{c}"], ref[name])
    fold = [
        set(foldin[u].nonzero()[1].tolist()) if foldin is not None else set()
        for u in range(scores.shape[0])
    ]
    expected = [ref_ranking(scores[u], fold[u], k) for u in range(scores.shape[0])]
    np.testing.assert_array_equal(top_k_items(scores, k, foldin), np.array(expected))


def test_tie_at_kth_place_breaks_to_lower_index_across_batches(monkeypatch):
    monkeypatch.setattr(M, "_BATCH_ROWS", 3)  # several batches, mixed tied / untied rows
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(10, 40)).astype(np.float32)
    scores[::2] = rng.random((5, 40), dtype=np.float32)
    expected = [ref_ranking(row, set(), 7) for row in scores]
    np.testing.assert_array_equal(top_k_items(scores, 7), np.array(expected))


def test_nan_scores_rank_after_numbers():
    scores = np.array([[np.nan, 0.1, -5.0, np.nan]])
    np.testing.assert_array_equal(top_k_items(scores, 4), [[1, 2, 0, 3]])


def _one_user(heldout_items, n_items=6):
    h = np.zeros((1, n_items))
    h[0, heldout_items] = 1
    return sp.csr_matrix(h)


def test_hand_computed_cases():
    scores = np.array([[6.0, 5, 4, 3, 2, 1]])  # ranking 0, 1, 2, ...
    perfect = _one_user([0, 1])
    assert ndcg_at_k(scores, perfect, k=2)[0] == pytest.approx(1.0)
    assert map_at_k(scores, perfect, k=2)[0] == pytest.approx(1.0)
    none = _one_user([5])
    assert ndcg_at_k(scores, none, k=3)[0] == 0.0
    assert hit_rate_at_k(scores, none, k=3)[0] == 0.0
    # hit at rank 2 only: DCG = 1/log2(3), IDCG (one relevant) = 1
    assert ndcg_at_k(scores, _one_user([1]), k=3)[0] == pytest.approx(1 / math.log2(3))
    # truncation: 4 held out, k=2, both top items relevant -> truncated recall 1, standard 0.5
    many = _one_user([0, 1, 4, 5])
    assert recall_at_k(scores, many, k=2)[0] == pytest.approx(1.0)
    assert standard_recall_at_k(scores, many, k=2)[0] == pytest.approx(0.5)
    assert precision_at_k(scores, many, k=2)[0] == pytest.approx(1.0)
    assert ndcg_at_k(scores, many, k=2)[0] == pytest.approx(1.0)
    # AP@4 with hits at ranks 1 and 3: (1/1 + 2/3) / min(4, 2)
    assert map_at_k(scores, _one_user([0, 2]), k=4)[0] == pytest.approx((1 + 2 / 3) / 2)


def test_foldin_items_are_excluded_and_empty_users_are_nan():
    scores = np.array([[9.0, 8, 1, 0], [1.0, 2, 3, 4]])
    heldout = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
    foldin = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    result = ndcg_at_k(scores, heldout, foldin, k=1)
    assert result[0] == pytest.approx(1.0)
    assert np.isnan(result[1])


def test_graded_ndcg_uses_values_as_gains():
    scores = np.array([[3.0, 2.0, 1.0]])
    heldout = sp.csr_matrix(np.array([[1.0, 5.0, 0.0]]))
    dcg = 1 + 5 / math.log2(3)
    idcg = 5 + 1 / math.log2(3)
    assert ndcg_at_k(scores, heldout, k=3, graded=True)[0] == pytest.approx(dcg / idcg)
    assert ndcg_at_k(scores, heldout, k=3)[0] == pytest.approx(1.0)


def test_catalogue_coverage():
    scores = np.array([[3.0, 2, 1, 0], [3.0, 2, 1, 0]])
    assert catalogue_coverage(scores, k=2) == pytest.approx(0.5)
    foldin = sp.csr_matrix(np.array([[0, 0, 0, 0], [1, 1, 0, 0]], dtype=np.float32))
    assert catalogue_coverage(scores, foldin, k=2) == pytest.approx(1.0)


@pytest.mark.parametrize("bad_k", [0, -1, 2.5])
def test_bad_k_is_rejected(bad_k):
    scores, heldout = np.zeros((1, 3)), _one_user([0], 3)
    with pytest.raises(ValueError, match="positive integer"):
        ndcg_at_k(scores, heldout, k=bad_k)
    with pytest.raises(ValueError, match="positive integer"):
        evaluate_all(scores, heldout, ks=(10, bad_k))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        recall_at_k(np.zeros((2, 3)), _one_user([0], 3))
