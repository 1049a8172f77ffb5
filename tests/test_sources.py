"""The `file` source, dataset dispatch, option checking and the cache-dir default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.data.sources import default_cache_dir, load_interactions

FRAME = pd.DataFrame(
    {
        "uid": ["alice", "alice", "bob", "carol"],
        "iid": [10, 20, 10, 30],
        "stars": [5, 2.5, 4, 1],
        "when": [100, 200, 300, 400],
    }
)
FILE_OPTS = {"user_col": "uid", "item_col": "iid", "rating_col": "stars", "timestamp_col": "when"}


def _check(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
    assert frame["user"].tolist() == ["alice", "alice", "bob", "carol"]  # strings kept
    assert frame["item"].tolist() == [10, 20, 10, 30]
    assert frame["rating"].dtype == np.float32 and frame["timestamp"].dtype == np.int64
    assert frame["rating"].tolist() == [5.0, 2.5, 4.0, 1.0]
    assert frame["timestamp"].tolist() == [100, 200, 300, 400]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".csv.gz"])
def test_file_formats_inferred_from_suffix(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"ratings{suffix}"
    if suffix == ".parquet":
        FRAME.to_parquet(path)
    else:
        FRAME.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    _check(load_interactions("file", path=str(path), **FILE_OPTS))


def test_file_explicit_sep_no_header_positions(tmp_path: Path) -> None:
    path = tmp_path / "ratings.data"
    FRAME.to_csv(path, sep=";", index=False, header=False)
    frame = load_interactions(
        "file", path=path, sep=";", header=False, user_col=0, item_col=1, rating_col=2,
        timestamp_col=3,
    )  # fmt: skip
    _check(frame)


def test_file_implicit_feedback_defaults(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    pd.DataFrame({"user": [1, 2], "item": ["a", "b"]}).to_csv(path, index=False)
    frame = load_interactions("file", path=path, rating_col=None, data_dir=None, progress=False)
    assert frame["rating"].tolist() == [1.0, 1.0] and frame["timestamp"].tolist() == [0, 0]
    assert frame["rating"].dtype == np.float32 and frame["timestamp"].dtype == np.int64


def test_file_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv.*dataset\.options\.path"):
        load_interactions("file", path=tmp_path / "nope.csv")


def test_file_unknown_suffix_needs_sep(tmp_path: Path) -> None:
    path = tmp_path / "ratings.weird"
    path.write_text("user,item\n1,2\n")
    with pytest.raises(ValueError, match="dataset.options.sep"):
        load_interactions("file", path=path)


def test_file_wrong_columns(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    FRAME.to_csv(path, index=False)
    with pytest.raises(ValueError) as err:
        load_interactions("file", path=path, user_col="uid", item_col="movie", rating_col="stars")
    message = str(err.value)
    assert "item_col='movie'" in message  # the configured name
    assert "['uid', 'iid', 'stars', 'when']" in message  # the columns found
    assert "dataset.options.item_col" in message  # the key to set


def test_file_unparseable_rating_names_row(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating\n1,2,4\n1,3,five\n2,2,3\n")
    with pytest.raises(ValueError, match=r"line 3 \(data row 1\), column 'rating'.*'five'"):
        load_interactions("file", path=path)


def test_file_unparseable_timestamp_and_empty_id(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating,ts\n1,2,4,10\n1,3,5,yesterday\n")
    with pytest.raises(ValueError, match=r"column 'ts'.*'yesterday'"):
        load_interactions("file", path=path, timestamp_col="ts")
    path.write_text("user,item,rating\n1,2,4\n,3,5\n")
    with pytest.raises(ValueError, match=r"line 3.*column 'user'.*empty"):
        load_interactions("file", path=path)


def test_unknown_dataset_and_option() -> None:
    with pytest.raises(ValueError, match="ml-100k"):
        load_interactions("netflix")
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['colour'\].*n_users"):
        load_interactions("synthetic", colour="red")
    with pytest.raises(ValueError, match="base_url"):
        load_interactions("ml-1m", path="x.csv")


def test_synthetic_via_dispatch_ignores_data_dir() -> None:
    frame = load_interactions("synthetic", n_users=50, n_items=400, data_dir="/unused", seed=3)
    assert frame["user"].nunique() == 50


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VAE_SWEEP_DATA_DIR", str(tmp_path / "data"))
    assert default_cache_dir() == tmp_path / "data"
    monkeypatch.delenv("VAE_SWEEP_DATA_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "vae-sweep"
