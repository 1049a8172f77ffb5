"""Seed API parity, recommend_k_items, the registry and input validation."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import scipy.sparse as sp
from matplotlib.figure import Figure

from harness.errors import UserError
from harness.evaluation import ndcg_at_k
from harness.models import (
    EASE,
    Mult_VAE,
    MultVAE,
    Popularity,
    StandardVAE,
    UnknownModelError,
    build_model,
    model_defaults,
    model_param_names,
    model_spec,
    registered_models,
)
from harness.models.batching import ndcg_from_top

SEED_PARAMS = [
    ("n_users", inspect.Parameter.empty),
    ("original_dim", inspect.Parameter.empty),
    ("intermediate_dim", 200),
    ("latent_dim", 70),
    ("n_epochs", 400),
    ("batch_size", 100),
    ("k", 100),
    ("verbose", 1),
    ("drop_encoder", 0.5),
    ("drop_decoder", 0.5),
    ("beta", 1.0),
    ("annealing", False),
    ("anneal_cap", 1.0),
    ("seed", None),
    ("save_path", None),
]
KEYWORD_ONLY = {"learning_rate": 1e-3, "total_anneal_steps": None, "n_hidden_layers": 1,
                "l2_penalty": 0.0, "plateau_factor": 0.2, "plateau_patience": 1,
                "plateau_min_lr": 1e-4,
                # harness additions, off by default (the seed trains every epoch and anneals
                # over 80% of n_epochs): early stopping and the annealing length in epochs
                "patience": None, "anneal_epochs": None}  # fmt: skip
# the seed's schedule and Keras' Adam for StandardVAE; Liang et al.'s for MultVAE
SCHEDULE = {"StandardVAE": {"lr_schedule": "plateau", "adam_epsilon": 1e-7},
            "MultVAE": {"lr_schedule": "constant", "adam_epsilon": 1e-8}}  # fmt: skip
METHODS = ["fit", "recommend_k_items", "get_optimal_beta", "display_metrics", "ndcg_per_epoch",
           "history", "score"]  # fmt: skip
N_USERS, N_ITEMS = 40, 25


def _clicks(n_users: int = N_USERS, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n_users, N_ITEMS)) < 0.25).astype(np.float32))


@pytest.mark.parametrize("cls", [StandardVAE, MultVAE])
def test_constructor_and_methods_match_the_seed(cls) -> None:
    params = inspect.signature(cls).parameters
    positional = [(n, p.default) for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    seed_params = dict(SEED_PARAMS)
    if cls is MultVAE:
        seed_params["drop_decoder"] = 0.0  # Liang et al.: dropout on the input only
    assert positional == list(seed_params.items())
    keyword = {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    expected = {**KEYWORD_ONLY, **SCHEDULE[cls.__name__]}
    if cls is StandardVAE:
        expected["output_activation"] = "softmax"
    assert keyword == expected
    fit = list(inspect.signature(cls.fit).parameters)
    assert fit == ["self", "x_train", "x_valid", "x_val_tr", "x_val_te", "mapper",
                   "epoch_callback", "callbacks"]  # fmt: skip
    assert list(inspect.signature(cls.recommend_k_items).parameters) == [
        "self", "x", "k", "remove_seen", "sparse"]  # fmt: skip
    for method in METHODS:
        assert callable(getattr(cls, method))
    assert Mult_VAE is MultVAE


SMALL = {"n_epochs": 2, "k": 5, "verbose": 0, "seed": 0}
FACTORIES = {
    "standard": lambda: StandardVAE(N_USERS, N_ITEMS, 8, 4, **SMALL),
    "sigmoid": lambda: StandardVAE(N_USERS, N_ITEMS, 8, 4, **SMALL, output_activation="sigmoid"),
    "mult": lambda: MultVAE(N_USERS, N_ITEMS, 8, 4, **SMALL),
    "ease": lambda: EASE(lam=10.0, k=5),
    "popularity": lambda: Popularity(k=5),
}


@pytest.mark.parametrize("make", FACTORIES.values(), ids=FACTORIES.keys())
def test_recommend_k_items_exactly_k_unseen_entries(make) -> None:
    model = make()
    model.fit(_clicks(), x_val_tr=_clicks(10, 1), x_val_te=_clicks(10, 2))
    x = _clicks(10, 3)
    top = model.recommend_k_items(x, k=7, sparse=True)
    assert sp.issparse(top) and top.shape == x.shape
    assert (np.diff(top.indptr) == 7).all()
    assert not top.multiply(x).nnz  # no seen item among the recommendations
    scores = model.score(x)
    masked = np.where(x.toarray() > 0, -np.inf, scores)
    for row in range(x.shape[0]):
        best = np.sort(masked[row])[::-1][:7]
        np.testing.assert_allclose(np.sort(top[row].data)[::-1], best, rtol=1e-5)
    dense = model.recommend_k_items(x, k=7)  # the seed's return: dense, 0 off the top k
    assert isinstance(dense, np.ndarray) and dense.dtype == np.float32
    np.testing.assert_array_equal(dense, top.toarray())
    assert (np.count_nonzero(dense, axis=1) == 7).all()
    assert (np.diff(model.recommend_k_items(x, 3, False, sparse=True).indptr) == 3).all()


def test_negative_scores_are_explicit_entries() -> None:
    model = MultVAE(N_USERS, N_ITEMS, 8, 4, k=5, verbose=0, seed=0)
    # a large negative output bias makes every logit negative
    model.network.output_layer.bias.assign(np.full(N_ITEMS, -50.0, np.float32))
    x = _clicks(6, 4)
    top = model.recommend_k_items(x, k=5, sparse=True)
    assert (top.data < 0).all() and (np.diff(top.indptr) == 5).all()
    assert not top.multiply(x).nnz
    dense = model.recommend_k_items(x, k=5)  # negative logits stay non-zero entries
    assert (np.count_nonzero(dense, axis=1) == 5).all() and (dense[dense != 0] < 0).all()


def test_user_with_fewer_unseen_items_than_k() -> None:
    model = Popularity(k=5).fit(_clicks())
    x = np.zeros((1, N_ITEMS), np.float32)
    x[0, 3:] = 1.0  # only 3 unseen items
    top = model.recommend_k_items(x, k=5, sparse=True)
    assert top.nnz == 5 and (top.data == 0).sum() == 2  # the seed leaves 0, never -inf
    dense = model.recommend_k_items(x, k=5)
    assert np.isfinite(dense).all() and set(np.flatnonzero(dense)) == {0, 1, 2}


def test_fast_ndcg_equals_the_evaluation_module() -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 5, size=(30, 40)).astype(np.float32)  # many ties
    dense = (rng.random((30, 40)) < 0.1).astype(np.float32)
    dense[0] = 0  # a user without held-out items -> NaN
    heldout = sp.csr_matrix(dense)
    foldin = sp.csr_matrix(
        (rng.random((30, 40)) < 0.2).astype(np.float32) * (heldout.toarray() == 0)
    )
    from harness.evaluation import top_k_items

    for k in (1, 5, 40):
        top = top_k_items(scores, k, foldin)
        np.testing.assert_allclose(
            ndcg_from_top(top, heldout), ndcg_at_k(scores, heldout, foldin, k), equal_nan=True
        )


def test_display_metrics_returns_a_figure() -> None:
    model = MultVAE(N_USERS, N_ITEMS, 8, 4, n_epochs=2, k=5, verbose=0, seed=0)
    model.fit(_clicks(), x_val_tr=_clicks(10, 1), x_val_te=_clicks(10, 2))
    import matplotlib.pyplot as plt

    fig = model.display_metrics()
    assert isinstance(fig, Figure) and plt.gcf() is fig  # plt.show()/plt.savefig see it
    loss_ax, ndcg_ax = fig.axes
    assert list(ndcg_ax.lines[0].get_ydata()) == model.ndcg_per_epoch()
    assert list(loss_ax.lines[0].get_ydata()) == model.train_loss
    plt.close(fig)


def test_registry_builds_every_model_with_its_defaults() -> None:
    assert {"standard_vae", "mult_vae", "ease", "popularity"} <= set(registered_models())
    for name in registered_models():
        defaults = model_defaults(name)
        assert set(defaults) <= model_param_names(name)
        params = {**defaults, "k": 5}
        if "intermediate_dim" in params:
            params.update(intermediate_dim=8, latent_dim=4, verbose=0)
        model = build_model(name, N_USERS, N_ITEMS, **params)
        assert isinstance(model, model_spec(name).cls) and hasattr(model, "fit")
    assert "output_activation" in model_param_names("standard_vae")
    assert "output_activation" not in model_param_names("mult_vae")
    assert model_param_names("ease") == {"lam", "k", "lambdas"}


def test_registry_specs() -> None:
    for name in registered_models():
        spec = model_spec(name)
        assert spec.name == name and spec.formats and all(f.startswith(".") for f in spec.formats)
        assert not spec.has_beta or spec.iterative  # a KL weight is annealed over epochs
    assert model_spec("mult_vae").has_beta and model_spec("standard_vae").seeded
    assert not model_spec("ease").seeded and not model_spec("popularity").iterative


def test_defaults_come_from_the_model_configs() -> None:
    # one source: the harness's n_epochs is the yaml's, the class keeps the seed's 400
    assert model_defaults("mult_vae")["n_epochs"] == 100
    assert inspect.signature(MultVAE).parameters["n_epochs"].default == 400
    assert "name" not in model_defaults("ease")


def test_registry_rejects_unknown_names_and_parameters() -> None:
    with pytest.raises(UnknownModelError, match="choose one of.*mult_vae") as info:
        build_model("vae", 10, 10)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
    for name in registered_models():
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown parameter.*'latent'.*latent_dim"):
        build_model("mult_vae", 10, 10, latent=3)
    with pytest.raises(ValueError, match="choose one of"):
        model_param_names("nope")
    with pytest.raises(UnknownModelError, match="choose one of"):
        model_spec("nope")


def _vae(**kw):
    return StandardVAE(N_USERS, N_ITEMS, 8, 4, **{"k": 5, "verbose": 0, **kw})


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 26}, "k=26"),
    ({"drop_encoder": 1.0}, "drop_encoder"),
    ({"drop_decoder": -0.1}, "drop_decoder"),
    ({"annealing": True, "anneal_cap": 0.0}, "anneal_cap"),
    ({"n_epochs": 0}, "n_epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"output_activation": "relu"}, "output_activation"),
])  # fmt: skip
def test_bad_hyperparameters_raise(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        _vae(**kwargs)


@pytest.mark.parametrize("args, match", [
    ({"x_train": _clicks()[:, :20]}, "x_train has 20 item columns"),
    ({"x_val_tr": _clicks(5)[:, :20], "x_val_te": _clicks(5)[:, :20]}, "x_val_tr has 20"),
    ({"x_valid": _clicks(5)[:, :24]}, "x_valid has 24"),
    ({"x_val_tr": _clicks(5)}, "both x_val_tr"),
    ({"x_val_tr": _clicks(5), "x_val_te": _clicks(6)}, "same validation users"),
    ({"x_train": -_clicks()}, "negative"),
    ({"x_train": np.full((N_USERS, N_ITEMS), np.nan)}, "NaN"),
    ({"x_train": _clicks(N_USERS + 1)}, "n_users"),
    ({"x_train": np.zeros(N_ITEMS)}, "2-D"),
])  # fmt: skip
def test_bad_fit_inputs_raise_before_training(args, match) -> None:
    model = _vae(n_epochs=1)
    inputs = {"x_train": _clicks(), **args}
    called = []
    with pytest.raises(ValueError, match=match):
        model.fit(**inputs, epoch_callback=lambda e, logs: called.append(e))
    assert not called and model.history()["loss"] == []


def test_baseline_bad_inputs() -> None:
    with pytest.raises(ValueError, match="k=30"):
        Popularity(k=30).fit(_clicks())
    with pytest.raises(ValueError, match="x_val_tr and x_val_te"):
        EASE(lambdas=[1.0, 2.0], k=5).fit(_clicks())
    with pytest.raises(ValueError, match="lambda"):
        EASE(lam=-1.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        EASE(k=5).score(_clicks())


def test_baseline_history_has_one_epoch() -> None:
    seen = []
    model = EASE(lam=5.0, k=5).fit(
        _clicks(), x_val_tr=_clicks(10, 1), x_val_te=_clicks(10, 2),
        epoch_callback=lambda e, logs: seen.append((e, logs)),
    )  # fmt: skip
    hist = model.history()
    assert set(hist) == {"ndcg", "loss", "val_loss", "beta", "lr"}
    assert len(hist["ndcg"]) == 1 and 0 <= hist["ndcg"][0] <= 1
    assert all(math.isnan(hist[key][0]) for key in ("loss", "val_loss", "beta", "lr"))
    assert seen[0][0] == 0 and seen[0][1]["ndcg"] == hist["ndcg"][0]
    assert model.best_epoch == 0 and model.best_ndcg == hist["ndcg"][0]
    assert math.isnan(model.get_optimal_beta())


@pytest.mark.parametrize("name", registered_models())
def test_model_configs_build(name: str) -> None:
    from pathlib import Path

    import yaml
    from omegaconf import OmegaConf

    path = Path(__file__).parents[1] / "conf" / "model" / f"{name}.yaml"
    assert yaml.safe_load(path.read_text())["name"] == name
    params = OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # without a budget
    assert params.pop("name") == name
    assert set(params) <= model_param_names(name)
    model = build_model(name, 50, 150, **params)
    assert model.k == params["k"]
