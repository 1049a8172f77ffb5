"""Synthetic generator: shape, determinism, validity and the planted low-rank structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import harness.data.synthetic as synthetic
from harness.data.synthetic import generate_synthetic


def _positives(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["rating"] > 3.5]


def test_shape_dtypes_and_validity() -> None:
    frame = generate_synthetic(n_users=300, n_items=200, n_positives=6000, seed=1)
    assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
    assert [str(t) for t in frame.dtypes] == ["int32", "int32", "float32", "int64"]
    pos = _positives(frame)
    assert len(pos) == 6000
    assert set(frame["user"].unique()) == set(range(300))
    assert frame["item"].between(0, 199).all()
    assert not frame.duplicated(["user", "item"]).any()
    assert set(pos["rating"].unique()) <= {4.0, 5.0}
    low = frame[frame["rating"] <= 3.5]
    assert set(low["rating"].unique()) == {1.0, 2.0, 3.0}
    assert 0.1 * len(pos) < len(low) < 0.3 * len(pos)  # negative_ratio 0.25 minus collisions
    per_user = pos.groupby("user").size()
    assert per_user.min() >= 5 and per_user.max() <= 40  # min_user_positives, n_items // 5
    assert frame.equals(frame.sort_values(["user", "item"]).reset_index(drop=True))


def test_density_default_and_options() -> None:
    frame = generate_synthetic()  # 2000 x 1000 at density 0.02
    assert len(_positives(frame)) == 40_000
    frame = generate_synthetic(n_users=100, n_items=500, density=0.05, negative_ratio=0.0)
    assert len(frame) == len(_positives(frame)) == 2500


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    kwargs = {"n_users": 400, "n_items": 300, "density": 0.05}
    a = generate_synthetic(seed=7, **kwargs)
    pd.testing.assert_frame_equal(a, generate_synthetic(seed=7, **kwargs))
    b = generate_synthetic(seed=8, **kwargs)
    keys_a = set(zip(a["user"], a["item"], strict=True))
    keys_b = set(zip(b["user"], b["item"], strict=True))
    assert len(keys_a & keys_b) < 0.5 * len(keys_a)


def test_chunks_and_heavy_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several chunks plus users needing many resampling rounds still get exact counts."""
    monkeypatch.setattr(synthetic, "CHUNK_USERS", 64)
    frame = generate_synthetic(
        n_users=300, n_items=100, n_positives=5000, popularity_skew=2.0, noise=0.01, seed=2
    )
    pos = _positives(frame)
    assert len(pos) == 5000 and pos.groupby("user").size().max() == 20  # capped at n_items // 5
    assert not frame.duplicated(["user", "item"]).any()


@pytest.mark.parametrize(
    "kwargs",
    [{"n_users": 0}, {"density": 0.1, "n_positives": 10}, {"n_users": 10, "n_positives": 10**6}],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="Fix"):
        generate_synthetic(**kwargs)


def _recall(scores: np.ndarray, foldin: np.ndarray, heldout: np.ndarray, k: int = 20) -> float:
    scores = np.where(foldin > 0, -np.inf, scores)
    top = np.argsort(-scores, axis=1)[:, :k]
    hits = np.take_along_axis(heldout, top, axis=1).sum(1)
    return float((hits / np.minimum(k, heldout.sum(1))).mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_structure_beats_popularity(seed: int) -> None:
    """A rank-10 truncated SVD of training users beats popularity on held-out users."""
    frame = _positives(generate_synthetic(seed=seed))
    x = np.zeros((2000, 1000), dtype=np.float32)
    x[frame["user"], frame["item"]] = 1.0
    rng = np.random.default_rng(123)
    users = rng.permutation(2000)
    train, held = x[users[:-300]], x[users[-300:]]
    foldin, heldout = held.copy(), np.zeros_like(held)
    for row in range(len(held)):  # strong generalisation: 20% of each held-out user hidden
        items = rng.permutation(np.flatnonzero(held[row]))
        hidden = items[: max(1, int(0.2 * items.size))]
        heldout[row, hidden], foldin[row, hidden] = 1.0, 0.0
    _, eigvecs = np.linalg.eigh(train.T @ train)  # right singular vectors, ascending
    factors = eigvecs[:, -10:]
    svd = _recall(foldin @ factors @ factors.T, foldin, heldout)
    popularity = _recall(np.tile(train.sum(0), (len(held), 1)), foldin, heldout)
    print(f"recall@20 seed {seed}: svd {svd:.3f} popularity {popularity:.3f}")
    assert svd > 1.4 * popularity, (svd, popularity)


def test_medium_shape() -> None:
    """A million positives come out exactly. How long it takes is a benchmark, not a test:
    `python benchmarks/bench_synthetic.py --users 20000 --items 5000 --positives 1000000`."""
    frame = generate_synthetic(n_users=20_000, n_items=5_000, n_positives=1_000_000, seed=0)
    assert len(_positives(frame)) == 1_000_000


@pytest.mark.slow
def test_ml20m_shape() -> None:
    """The ML-20M shape (about 12 s, 0.75 GiB peak RSS on the dev machine)."""
    frame = generate_synthetic(n_users=136_677, n_items=20_108, n_positives=10_000_000, seed=0)
    assert len(_positives(frame)) == 10_000_000
    assert frame["user"].nunique() == 136_677
    assert frame["user"].dtype == np.int32 and frame["item"].dtype == np.int32
