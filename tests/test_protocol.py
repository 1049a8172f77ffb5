"""The strong/weak generalisation protocol on small hand-built interaction tables."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from harness.data.protocol import Split, make_split


def interactions(n_users=300, n_items=80, n=9000, seed=0, id_offset=1000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user": rng.integers(0, n_users, n) + id_offset,  # ids are not 0..n-1
            "item": rng.integers(0, n_items, n) * 7,
            "rating": rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n).astype(np.float32),
            "timestamp": np.arange(n, dtype=np.int64),
        }
    )


def positives(df: pd.DataFrame, threshold=3.5) -> set[tuple[int, int]]:
    pos = df[df["rating"] > threshold]
    return set(zip(pos["user"].tolist(), pos["item"].tolist(), strict=True))


def pairs(m: sp.csr_matrix, users: np.ndarray, items: np.ndarray) -> set[tuple[int, int]]:
    r, c = m.nonzero()
    return set(zip(users[r].tolist(), items[c].tolist(), strict=True))


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return interactions()


@pytest.fixture(scope="module")
def split(df) -> Split:
    return make_split(df, n_val_users=40, n_test_users=30)


def test_user_sets_are_disjoint_and_sized(split):
    train, val, test = map(set, (split.train_users, split.val_users, split.test_users))
    assert not (train & val or train & test or val & test)
    assert (len(val), len(test)) == (40, 30)
    assert split.n_train_users == len(train) == split.train.shape[0]
    assert split.val_tr.shape == split.val_te.shape == (40, split.n_items)


def test_blocks_are_binary_float32_csr(split):
    for name in ("train", "val_tr", "val_te", "test_tr", "test_te"):
        m = getattr(split, name)
        assert sp.issparse(m) and m.format == "csr" and m.dtype == np.float32
        assert np.all(m.data == 1.0)


def test_item_axis_is_items_of_training_users(df, split):
    train_users = set(split.train_users.tolist())
    expected = {i for u, i in positives(df) if u in train_users}
    assert set(split.item_ids.tolist()) == expected
    assert np.all(np.diff(split.train.tocsc().indptr) > 0)  # every column has a training user


@pytest.mark.parametrize("prefix", ["val", "test"])
def test_foldin_and_heldout_partition_each_users_positives(df, split, prefix):
    users = getattr(split, f"{prefix}_users")
    tr, te = getattr(split, f"{prefix}_tr"), getattr(split, f"{prefix}_te")
    assert tr.multiply(te).nnz == 0
    on_axis = set(split.item_ids.tolist())
    truth = {(u, i) for u, i in positives(df) if u in set(users.tolist()) and i in on_axis}
    assert pairs(tr, users, split.item_ids) | pairs(te, users, split.item_ids) == truth
    n_te, n_all = np.diff(te.indptr), np.diff(te.indptr) + np.diff(tr.indptr)
    assert np.all(n_te >= 1)
    assert np.all(np.diff(tr.indptr)[n_all >= 2] >= 1)
    # floor(0.2 n), clipped to [1, n - 1]
    assert np.array_equal(n_te, np.clip(np.floor(0.2 * n_all + 1e-9), 1, np.maximum(n_all - 1, 1)))


def test_train_holds_all_positives_of_training_users(df, split):
    train_users = set(split.train_users.tolist())
    expected = {(u, i) for u, i in positives(df) if u in train_users}
    assert pairs(split.train, split.train_users, split.item_ids) == expected


def test_deterministic_for_a_seed_and_different_for_another(df, split):
    again = make_split(df.sample(frac=1.0, random_state=3), n_val_users=40, n_test_users=30)
    assert again == split and again.fingerprint == split.fingerprint  # row order is irrelevant
    other = make_split(df, n_val_users=40, n_test_users=30, seed=1)
    assert other.fingerprint != split.fingerprint
    assert not np.array_equal(other.val_users, split.val_users)


def test_fingerprint_depends_on_data_and_every_param(df, split):
    assert make_split(df.iloc[1:], n_val_users=40, n_test_users=30).fingerprint != split.fingerprint
    changed = make_split(df, n_val_users=40, n_test_users=30, heldout_fraction=0.3)
    assert changed.fingerprint != split.fingerprint


def test_cache_hit_and_atomic_write(df, tmp_path, caplog):
    first = make_split(df, n_val_users=10, n_test_users=10, cache_dir=tmp_path)
    files = list((tmp_path / "splits").iterdir())
    assert [f.name for f in files] == [f"{first.fingerprint}.npz"]  # no temp files left
    with caplog.at_level(logging.INFO, logger="harness.data.protocol"):
        second = make_split(df, n_val_users=10, n_test_users=10, cache_dir=tmp_path)
    assert not first.from_cache and second.from_cache
    assert "from cache" in caplog.text
    assert second == first
    assert second.train.dtype == np.float32 and second.params == first.params


def test_corrupt_cache_is_rebuilt(df, tmp_path):
    first = make_split(df, n_val_users=10, n_test_users=10, cache_dir=tmp_path)
    path = tmp_path / "splits" / f"{first.fingerprint}.npz"
    path.write_bytes(b"half a file")
    rebuilt = make_split(df, n_val_users=10, n_test_users=10, cache_dir=tmp_path)
    assert not rebuilt.from_cache and rebuilt == first
    assert make_split(df, n_val_users=10, n_test_users=10, cache_dir=tmp_path).from_cache


def test_string_ids_round_trip_through_cache(tmp_path):
    df = interactions(n_users=60, n_items=20, n=2000)
    df["user"], df["item"] = "u" + df["user"].astype(str), "i" + df["item"].astype(str)
    first = make_split(df, n_val_users=5, n_test_users=5, cache_dir=tmp_path)
    second = make_split(df, n_val_users=5, n_test_users=5, cache_dir=tmp_path)
    assert second.from_cache and second == first and second.val_users[0].startswith("u")


def test_min_counts_filter_items_then_users():
    df = interactions(n_users=200, n_items=60, n=5000)
    split = make_split(
        df, min_user_positives=12, min_item_positives=25, n_val_users=10, n_test_users=10
    )
    pos = pd.DataFrame(list(positives(df)), columns=["user", "item"])
    pos = pos[pos.groupby("item")["user"].transform("size") >= 25]
    pos = pos[pos.groupby("user")["item"].transform("size") >= 12]
    kept = np.concatenate([split.train_users, split.val_users, split.test_users])
    assert set(kept.tolist()) == set(pos["user"])
    assert set(split.item_ids.tolist()) <= set(pos["item"])


def test_fractions_and_summary(df):
    split = make_split(df, n_val_users=0.1, n_test_users=0.05)
    n = len({u for u, _ in positives(df)})
    assert split.val_users.size == round(0.1 * n) and split.test_users.size == round(0.05 * n)
    text = split.summary()
    assert split.fingerprint[:12] in text and "val_te" in text and f"{split.n_items:,}" in text


def test_weak_generalisation_keeps_every_user_in_training(df):
    split = make_split(df, kind="weak", n_val_users=20, n_test_users=20)
    assert set(split.val_users.tolist()) <= set(split.train_users.tolist())
    rows = np.searchsorted(split.train_users, split.val_users)
    train_of_val = split.train[rows]
    assert (train_of_val != split.val_tr).nnz == 0  # fold-in = training row
    assert train_of_val.multiply(split.val_te).nnz == 0  # held-out items never trained on


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "medium"}, "unknown kind"),
        ({"heldout_fraction": 1.0}, "heldout_fraction"),
        ({"heldout_fraction": 0}, "heldout_fraction"),
        ({"n_val_users": 200, "n_test_users": 200}, "only .* users"),
        ({"n_val_users": -3}, "n_val_users"),
        (
            {"threshold": 5.0},
            "no rating is above protocol.threshold=5.0.*set protocol.threshold=0.5",
        ),
        ({"min_user_positives": 10_000}, "min_user_positives=10000"),
    ],
)
def test_errors_name_problem_and_fix(df, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_split(df, cache_dir=tmp_path, **kwargs)
    assert not (tmp_path / "splits").exists()  # nothing written before the error


def test_missing_columns(tmp_path):
    df = pd.DataFrame({"userId": [1], "item": [2], "rating": [5.0]})
    with pytest.raises(ValueError, match=r"\['user'\].*rename"):
        make_split(df, cache_dir=tmp_path)
    assert list(Path(tmp_path).iterdir()) == []


def test_config_composes_to_make_split_kwargs_and_split_from_config(df, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness.data.protocol import split_from_config

    conf = Path(__file__).resolve().parents[1] / "conf"
    overrides = ["dataset=synthetic", "dataset.n_heldout_users=25", "protocol=weak"]
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose(config_name="split", overrides=overrides)
    calls = []

    def fake_load(name, **options):
        calls.append((name, options))
        return df

    fake = type(sys)("harness.data.sources")
    fake.load_interactions = fake_load
    monkeypatch.setitem(sys.modules, "harness.data.sources", fake)
    protocol = OmegaConf.to_container(cfg.protocol, resolve=True)
    assert protocol["kind"] == "weak" and protocol["n_val_users"] == 25
    # n_test_users: null in the config means the dataset's n_heldout_users (no folds)
    assert protocol["n_test_users"] is None and protocol["folds"] is None
    split = split_from_config(OmegaConf.to_container(cfg.dataset), protocol, tmp_path)
    assert calls == [("synthetic", OmegaConf.to_container(cfg.dataset.options))]
    assert split == make_split(df, **{**protocol, "n_test_users": 25})


def test_folds_partition_the_users_and_keep_each_folds_test_users_out_of_training(df):
    """protocol.folds=K: every eligible user is a test user in exactly one fold; a fold's
    validation users come from the other folds, and its test users never train."""
    splits = [make_split(df, n_val_users=20, folds=4, fold=k) for k in range(4)]
    tests = [set(np.asarray(s.test_users).tolist()) for s in splits]
    for i, a in enumerate(tests):
        for b in tests[i + 1 :]:
            assert not a & b
    eligible = (
        set(np.asarray(splits[0].test_users).tolist())
        | set(np.asarray(splits[0].val_users).tolist())
        | set(np.asarray(splits[0].train_users).tolist())
    )
    assert set().union(*tests) == eligible
    sizes = [len(t) for t in tests]
    assert max(sizes) - min(sizes) <= 1
    for s, test in zip(splits, tests, strict=True):
        assert not test & set(np.asarray(s.val_users).tolist())
        assert not test & set(np.asarray(s.train_users).tolist())
    assert len({s.fingerprint for s in splits}) == 4
    # the default (no folds) split keeps its fingerprint: folds are not in its parameters
    assert "folds" not in make_split(df).params


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folds": 1}, "protocol.folds=1 must be an integer >= 2"),
        ({"folds": 3, "n_test_users": 10}, "drop protocol.n_test_users"),
        ({"folds": 3, "fold": 3}, "protocol.fold=3 must be an integer in [0, protocol.folds=3)"),
        ({"fold": 1}, "without protocol.folds"),
        ({"folds": 1000}, "below the minimum"),
    ],
)
def test_bad_fold_settings_are_one_line_errors(df, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_split(df, cache_dir=tmp_path, **kwargs)
    assert not (tmp_path / "splits").exists()  # nothing written before the error
