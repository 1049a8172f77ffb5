"""The reference baselines beyond the contract: RP3beta against a dense NumPy replay of
Dacrema et al.'s code, iALS fold-in as the closed-form solve, RecVAE's alternating updates
and prior, and the one-line refusals of bad parameters before any data loads."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from harness.errors import UserError
from harness.models import build_model, model_defaults, model_spec, registered_models
from harness.models.registry import check_available
from harness.sweep.preflight import check_model_config
from harness.sweep.settings import SweepConfigError
from harness.sweep.space import parse_search_space


def _clicks(n_users=60, n_items=25, density=0.2, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < density).astype(np.float32)
    x[:, -1] = 0.0  # an item nobody clicked
    x[np.arange(n_users), rng.integers(0, n_items - 1, n_users)] = 1.0  # no empty user
    return sp.csr_matrix(x)


def test_the_new_models_are_registered() -> None:
    assert {"mult_dae", "recvae", "ials", "rp3beta"} <= set(registered_models())
    assert model_spec("recvae").iterative and not model_spec("recvae").has_beta
    assert model_spec("ials").seeded and model_spec("ials").formats == (".npz",)
    assert not model_spec("rp3beta").seeded and model_spec("mult_dae").formats == (".keras",)


# --- RP3beta -------------------------------------------------------------------------------
def _rp3beta_reference(x: np.ndarray, alpha, beta, topk, normalize) -> np.ndarray:
    """Dacrema et al.'s RP3betaRecommender.fit, dense, row by row."""
    p_ui = x / np.maximum(x.sum(axis=1, keepdims=True), 1e-300)
    xt = (x.T > 0).astype(np.float64)
    p_iu = xt / np.where(xt.sum(axis=1, keepdims=True) == 0, 1, xt.sum(axis=1, keepdims=True))
    pop = xt.sum(axis=1)
    degree = np.where(pop > 0, np.power(np.where(pop > 0, pop, 1), -beta), 0.0)
    p_ui, p_iu = p_ui**alpha, p_iu**alpha
    w = np.zeros((x.shape[1], x.shape[1]))
    for i in range(x.shape[1]):
        row = (p_iu[i] @ p_ui) * degree
        row[i] = 0.0
        best = np.argsort(-row, kind="stable")[:topk]
        best = best[row[best] != 0]
        w[i, best] = row[best]
    if normalize:
        sums = w.sum(axis=1, keepdims=True)
        w = np.divide(w, sums, out=np.zeros_like(w), where=sums != 0)
    return w


@pytest.mark.parametrize("alpha, beta, topk, normalize", [
    (1.0, 0.6, 8, True), (0.5, 0.0, 30, False), (1.7, 1.0, 3, True),
])  # fmt: skip
def test_rp3beta_matches_dacremas_code(alpha, beta, topk, normalize) -> None:
    from harness.models.rp3beta import rp3beta_similarity

    x = _clicks()
    w = rp3beta_similarity(x, alpha, beta, topk, normalize, block_rows=7)  # several blocks
    ref = _rp3beta_reference(x.toarray().astype(np.float64), alpha, beta, topk, normalize)
    np.testing.assert_allclose(w.toarray(), ref, rtol=2e-5, atol=1e-7)
    assert (np.diff(w.indptr) <= topk).all() and not w.diagonal().any()


def test_rp3beta_scores_fold_in_users_with_w() -> None:
    x = _clicks()
    model = build_model("rp3beta", 60, 25, topk=10, k=5).fit(x)
    users = _clicks(7, 25, seed=3)
    np.testing.assert_allclose(model.score(users), (users @ model.W_).toarray(), rtol=1e-6)


# --- iALS ----------------------------------------------------------------------------------
def test_ials_folds_users_in_by_the_closed_form_solve() -> None:
    x = _clicks()
    model = build_model("ials", 60, 25, factors=6, regularization=0.5, alpha=4.0,
                        iterations=4, seed=1, k=5).fit(x)  # fmt: skip
    items_before = model.item_factors_.copy()
    users = _clicks(5, 25, seed=9)
    scores = model.score(users)
    np.testing.assert_array_equal(model.item_factors_, items_before)  # never trained on
    y = model.item_factors_.astype(np.float64)
    for u in range(5):
        clicked = users[u].indices
        c = np.zeros(25)
        c[clicked] = 4.0  # implicit: confidence alpha on a click, 1 elsewhere
        a = y.T @ y + y[clicked].T @ ((c[clicked] - 1)[:, None] * y[clicked]) + 0.5 * np.eye(6)
        factors = np.linalg.solve(a, y[clicked].T @ c[clicked])
        np.testing.assert_allclose(scores[u], y @ factors, rtol=1e-3, atol=1e-4)


def test_ials_threads_follow_the_worker_layout(monkeypatch) -> None:
    from harness.models.ials import worker_threads

    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    assert worker_threads() == 1
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    assert worker_threads() == 3


def test_a_missing_optional_dependency_is_one_line(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "implicit" else real(name)
    )
    with pytest.raises(UserError, match="pip install implicit") as info:
        check_available("ials")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="pip install"):
        build_model("ials", 10, 10)


# --- RecVAE --------------------------------------------------------------------------------
def _weights(variables) -> list[np.ndarray]:
    return [v.numpy().copy() for v in variables]


def test_recvae_alternates_encoder_and_decoder_updates() -> None:
    from harness.models.recvae import RecVAE

    x = _clicks(40, 30)
    model = RecVAE(40, 30, 16, 4, n_epochs=1, batch_size=20, verbose=0, seed=2, k=5)
    net = model.network
    enc, dec = net.encoder_variables(), net.decoder_variables()
    prior = [w for layer in [*net.prior_layers, *net.prior_norms, net.prior_mu,
                             net.prior_log_var] for w in layer.weights]  # fmt: skip
    before = {"enc": _weights(enc), "dec": _weights(dec), "prior": _weights(prior)}
    from harness.models.batching import SparseBatches

    group = next(iter(SparseBatches(x, 20, 0).epoch_groups(0)))
    schedule = (np.int64(0), False, 1.0, 1.0)
    net.train_encoder_batches(*group, *schedule)
    assert all((a != b).any() for a, b in zip(before["enc"], _weights(enc), strict=True))
    assert all((a == b).all() for a, b in zip(before["dec"], _weights(dec), strict=True))
    net.train_decoder_batches(*group, *schedule)
    assert all((a != b).any() for a, b in zip(before["dec"], _weights(dec), strict=True))
    # the prior's encoder has its own initial weights until update_prior copies the encoder
    assert all((a == b).all() for a, b in zip(before["prior"], _weights(prior), strict=True))
    net.update_prior()
    for a, b in zip(_weights(enc), _weights(prior), strict=True):
        np.testing.assert_array_equal(a, b)


def test_recvae_kl_weight_is_gamma_times_clicks() -> None:
    import tensorflow as tf

    from harness.models.recvae import RecVAE

    x = _clicks(6, 30)
    indices = np.stack([np.repeat(np.arange(6), np.diff(x.indptr)), x.indices], axis=1)
    batch = tf.SparseTensor(indices.astype(np.int64), x.data, x.shape)
    eps = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    losses = {}
    for gamma in (0.01, 0.03):
        model = RecVAE(6, 30, 16, 4, gamma=gamma, verbose=0, seed=4, k=5)
        loss, recon, kl = (t.numpy() for t in model.network.per_user_loss(batch, epsilon=eps))
        np.testing.assert_allclose(loss, recon + gamma * np.diff(x.indptr) * kl, rtol=1e-5)
        losses[gamma] = kl
    np.testing.assert_allclose(losses[0.01], losses[0.03], rtol=1e-6)  # same weights and z


# --- bad parameters: one line before any data loads ----------------------------------------
@pytest.mark.parametrize("model, key, value, match", [
    ("ials", "regularization", -1.0, "regularization"),
    ("ials", "factors", 0, "factors"),
    ("rp3beta", "beta", 1.5, r"beta.*\[0, 1\]"),
    ("rp3beta", "beta", -0.1, r"beta.*\[0, 1\]"),
    ("rp3beta", "topk", 0, "topk"),
    ("recvae", "gamma", 0.0, "gamma"),
    ("recvae", "gamma", -0.01, "gamma"),
    ("recvae", "drop_encoder", 1.0, "drop_encoder"),
    ("mult_dae", "lam", -0.01, "lam"),
    ("mult_dae", "batch_size", 0, "batch_size"),
])  # fmt: skip
def test_out_of_range_parameters_are_refused_before_loading(model, key, value, match) -> None:
    params = {**model_defaults(model), key: value}
    space = parse_search_space({}, model_name=model)
    with pytest.raises(SweepConfigError, match=match) as info:
        check_model_config(model, params, space, {})
    assert "\n" not in str(info.value) and f"model.{key}" in str(info.value)


@pytest.mark.parametrize("model, key, expression", [
    ("rp3beta", "beta", "interval(0.0, 2.0)"),
    ("recvae", "gamma", "interval(0.0, 0.01)"),
    ("ials", "regularization", "interval(-1.0, 1.0)"),
])  # fmt: skip
def test_search_space_bounds_are_checked(model, key, expression) -> None:
    space = parse_search_space({key: expression}, model_name=model)
    with pytest.raises(SweepConfigError, match=f"search_space.{key}"):
        check_model_config(model, model_defaults(model), space, {key: expression})


@pytest.mark.parametrize("model", ["mult_dae", "recvae", "ials", "rp3beta"])
def test_shipped_configs_and_spaces_pass_the_checks(model) -> None:
    from pathlib import Path

    import yaml

    path = Path(__file__).parents[1] / "conf" / "search_space" / f"{model}.yaml"
    expressions = yaml.safe_load(path.read_text()) or {}
    space = parse_search_space(expressions, model_name=model)
    check_model_config(model, model_defaults(model), space, expressions)
    assert space.distributions
