"""The contract every model keeps, run on every model; and the Recommenders notebooks' calls.

Data: a small synthetic MovieLens-like table (harness.data.generate_synthetic) through the
harness's own strong-generalisation split, so the matrices are what a user's would be.
"""

from __future__ import annotations

import itertools
import math

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from matplotlib.figure import Figure

from harness.data.protocol import make_split
from harness.data.synthetic import generate_synthetic
from harness.models import (
    Mult_VAE,
    StandardVAE,
    build_model,
    load_model,
    model_defaults,
    model_spec,
    registered_models,
)

K = 10
# Every registered model runs the contract with its conf/model/<name>.yaml, shrunk to a few
# seconds by these values (applied to the parameters a model has); a new model gets the
# contract for free.
SMALL = {"intermediate_dim": 16, "latent_dim": 4, "n_epochs": 2, "batch_size": 64, "k": K,
         "verbose": 0, "seed": 3, "factors": 8, "iterations": 3}  # fmt: skip
VARIANTS = {"standard_vae_sigmoid": ("standard_vae", {"output_activation": "sigmoid"})}


def _params(key: str) -> dict:
    name, extra = VARIANTS.get(key, (key, {}))
    defaults = model_defaults(name)
    return {**defaults, **{k: v for k, v in SMALL.items() if k in defaults}, **extra}


MODELS = {key: _params(key) for key in (*registered_models(), *VARIANTS)}


def _name(key: str) -> str:
    return VARIANTS.get(key, (key, {}))[0]


def _spec(key: str):
    return model_spec(_name(key))


@pytest.fixture(scope="module")
def split():
    df = generate_synthetic(n_users=360, n_items=120, density=0.08, seed=1)
    return make_split(df, n_val_users=40, n_test_users=40, seed=5)


def _fit(key: str, split):
    model = build_model(_name(key), split.n_train_users, split.n_items, **MODELS[key])
    return model.fit(split.train, None, split.val_tr, split.val_te)


@pytest.fixture(scope="module")
def fitted(split):
    return {key: _fit(key, split) for key in MODELS}


@pytest.mark.parametrize("key", MODELS)
def test_public_methods_shapes_and_dtypes(fitted, split, key) -> None:
    model = fitted[key]
    x = split.test_tr
    hist = model.history()
    assert set(hist) == {"ndcg", "loss", "val_loss", "beta", "lr"}
    n_epochs = len(hist["ndcg"])
    assert n_epochs == (2 if _spec(key).iterative else 1)
    assert all(len(v) == n_epochs and all(isinstance(e, float) for e in v) for v in hist.values())
    assert model.ndcg_per_epoch() == hist["ndcg"] and 0 <= model.best_ndcg <= 1
    assert isinstance(model.best_epoch, int) and 0 <= model.best_epoch < n_epochs
    beta = model.get_optimal_beta()
    assert isinstance(beta, float) and (beta >= 0 if _spec(key).has_beta else math.isnan(beta))
    scores = model.score(x)
    assert scores.shape == x.shape and scores.dtype == np.float32 and np.isfinite(scores).all()
    dense = model.recommend_k_items(x, K)
    csr = model.recommend_k_items(x, K, sparse=True)
    assert isinstance(dense, np.ndarray) and dense.shape == x.shape and dense.dtype == np.float32
    assert sp.isspmatrix_csr(csr) and csr.shape == x.shape and csr.dtype == np.float32
    assert (np.diff(csr.indptr) == K).all()
    np.testing.assert_array_equal(csr.toarray(), dense)
    assert not (dense[x.toarray() > 0]).any()  # seen items are never recommended
    # the recommended entries are each row's k best unseen scores
    masked = np.where(x.toarray() > 0, -np.inf, scores)
    best = -np.sort(-masked, axis=1)[:, :K]
    np.testing.assert_allclose(-np.sort(-csr.toarray(), axis=1)[:, :K], np.maximum(best, 0) if (
        scores >= 0).all() else best, rtol=1e-6)  # fmt: skip
    fig = model.display_metrics() if hasattr(model, "display_metrics") else None
    if _spec(key).iterative:
        assert isinstance(fig, Figure)
        plt.close(fig)


@pytest.mark.parametrize("key", MODELS)
def test_same_seed_same_model(fitted, split, key) -> None:
    again = _fit(key, split)
    assert again.history()["ndcg"] == fitted[key].history()["ndcg"]
    np.testing.assert_array_equal(again.score(split.test_tr), fitted[key].score(split.test_tr))


@pytest.mark.parametrize("key", MODELS)
def test_save_load_round_trip(fitted, split, key, tmp_path) -> None:
    model = fitted[key]
    path = model.save(tmp_path / f"model{_spec(key).formats[0]}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    loaded = load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.score(split.test_tr), model.score(split.test_tr))
    np.testing.assert_array_equal(
        loaded.recommend_k_items(split.test_tr, K), model.recommend_k_items(split.test_tr, K)
    )
    np.testing.assert_equal(loaded.history(), model.history())  # NaNs compare equal
    assert loaded.best_epoch == model.best_epoch
    assert type(loaded).load(path).k == model.k
    if path.suffix == ".keras":
        network = keras.models.load_model(path)  # a plain Keras file
        np.testing.assert_allclose(
            network(split.test_tr.toarray()).numpy(), model.score(split.test_tr), atol=1e-6
        )
        assert loaded.get_params() == {**model.get_params(), "save_path": None}


def test_loading_another_class_or_item_count_names_both(fitted, split, tmp_path) -> None:
    vae = fitted["mult_vae"].save(tmp_path / "m.keras")
    ease = fitted["ease"].save(tmp_path / "e.npz")
    with pytest.raises(ValueError, match="class MultVAE, not StandardVAE"):
        StandardVAE.load(vae)
    with pytest.raises(ValueError, match="class EASE, not MultVAE"):
        load_model(ease, expected="mult_vae")
    n = split.n_items
    with pytest.raises(ValueError, match=f"trained on {n} items but {n + 1} items"):
        load_model(vae, n_items=n + 1)
    with pytest.raises(ValueError, match=f"trained on {n} items but 7 items"):
        load_model(ease, n_items=7)
    bad = tmp_path / "notes.keras"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="not a model file"):
        load_model(bad)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match=r"\.keras"):
        fitted["mult_vae"].save(tmp_path / "m.h5")
    with pytest.raises(ValueError, match="does not exist"):
        fitted["ease"].save(tmp_path / "no" / "e.npz")
    wrong = build_model("mult_vae", split.n_train_users, n + 1, **MODELS["mult_vae"])
    with pytest.raises(ValueError, match=f"{n + 1} items"):
        wrong.load_weights(vae)


@pytest.mark.parametrize("key", MODELS)
def test_k_larger_than_the_unseen_items(fitted, split, key) -> None:
    model = fitted[key]
    x = np.zeros((2, split.n_items), np.float32)
    x[0, 3:] = 1.0  # 3 unseen items, k = 10
    x[1, :5] = 1.0
    dense = model.recommend_k_items(x, K)
    assert np.isfinite(dense).all()  # the seed leaves 0, never -inf
    assert not dense[0, 3:].any() and np.count_nonzero(dense[0]) <= 3
    csr = model.recommend_k_items(x, K, sparse=True)
    assert (np.diff(csr.indptr) == K).all() and np.isfinite(csr.data).all()
    assert set(csr[0].indices) >= {0, 1, 2}  # every unseen item is among the k


class AffinityMapper:
    """The notebooks' consumer of recommend_k_items: Recommenders' AffinityMatrix
    ``map_back_sparse``, reproduced (a per-row ``np.where(X[i, :] != 0)`` walk over an
    ndarray), with the identity id maps of a matrix built from 0-based ids."""

    def map_back_sparse(self, X, kind: str) -> pd.DataFrame:
        m, _ = X.shape
        items = [np.asanyarray(np.where(X[i, :] != 0)).flatten() for i in range(m)]
        ratings = [X[i, items[i]] for i in range(m)]
        userids = list(itertools.chain.from_iterable([i] * len(items[i]) for i in range(m)))
        col = "rating" if kind == "ratings" else "prediction"
        return pd.DataFrame({
            "userID": userids,
            "itemID": list(itertools.chain.from_iterable(items)),
            col: list(itertools.chain.from_iterable(ratings)),
        })  # fmt: skip


@pytest.mark.parametrize("cls", [StandardVAE, Mult_VAE])
def test_notebook_replay(split, cls, tmp_path) -> None:
    """The deep-dive notebooks' cells with the import changed: without annealing, with
    annealing to 1, then at the optimal beta; each evaluated through map_back_sparse."""
    train_data = split.train.toarray()  # the notebooks pass dense numpy arrays
    val_data = (split.val_tr + split.val_te).toarray()
    val_data_tr, test_data_tr = split.val_tr.toarray(), split.test_tr.toarray()
    rng = np.random.default_rng(0)
    val_data_te_ratings = split.val_te.toarray() * rng.choice([4.0, 5.0], split.val_te.shape)
    test_data_te_ratings = split.test_te.toarray() * 5.0
    weights_path = str(tmp_path / "svae_weights.hdf5")
    am_val = am_test = AffinityMapper()
    common = dict(n_users=train_data.shape[0], original_dim=train_data.shape[1],
                  intermediate_dim=200, latent_dim=70, n_epochs=3, batch_size=100, k=100,
                  verbose=0, seed=98765, save_path=weights_path, drop_encoder=0.5,
                  drop_decoder=0.5)  # fmt: skip
    runs = [dict(annealing=False, beta=1.0), dict(annealing=True, anneal_cap=1.0)]
    models = []
    for extra in runs:
        model = cls(**common, **extra)
        model.fit(x_train=train_data, x_valid=val_data, x_val_tr=val_data_tr,
                  x_val_te=val_data_te_ratings, mapper=am_val)  # fmt: skip
        model.display_metrics()
        assert len(plt.gcf().axes) == 2 and plt.gcf().axes[1].lines  # drawn on pyplot
        plt.close("all")
        assert len(model.ndcg_per_epoch()) == 3
        models.append(model)
    optimal_beta = models[1].get_optimal_beta()
    assert 0 < optimal_beta <= 1 and optimal_beta == models[1].ls_beta[models[1].best_epoch]
    model = cls(**common, annealing=True, anneal_cap=optimal_beta)
    model.fit(x_train=train_data, x_valid=val_data, x_val_tr=val_data_tr,
              x_val_te=val_data_te_ratings, mapper=am_val)  # fmt: skip
    # the seed's attributes
    assert model.model is model.network and model.number_of_batches == math.ceil(
        train_data.shape[0] / 100
    )
    assert model.total_anneal_steps == (model.number_of_batches * (3 - int(0.6))) // optimal_beta
    assert model.train_loss == model.history()["loss"] and len(model.val_loss) == 3
    assert model.val_ndcg == model.ndcg_per_epoch() and len(model.ls_beta) == 3
    for top_k_size in (10, 100):
        top_k = model.recommend_k_items(x=test_data_tr, k=top_k_size, remove_seen=True)
        top_k_df = am_test.map_back_sparse(top_k, kind="prediction")
        test_df = am_test.map_back_sparse(test_data_te_ratings, kind="ratings")
        per_user = top_k_df.groupby("userID").size()
        assert len(per_user) == test_data_tr.shape[0] and (per_user == top_k_size).all()
        seen = set(zip(*np.nonzero(test_data_tr), strict=True))
        assert not seen & set(zip(top_k_df["userID"], top_k_df["itemID"], strict=True))
        assert set(test_df["userID"]) <= set(top_k_df["userID"])
        # the recommended items are the model's top-k unseen items
        scores = np.where(test_data_tr > 0, -np.inf, model.score(test_data_tr))
        first = top_k_df[top_k_df["userID"] == 0].sort_values("prediction", ascending=False)
        np.testing.assert_array_equal(
            first["itemID"].to_numpy(), np.argsort(-scores[0], kind="stable")[:top_k_size]
        )
