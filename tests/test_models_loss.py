"""The VAE losses against plain-numpy formulas, and the KL-annealing schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from harness.models import AnnealingCallback, MultVAE, StandardVAE, beta_at
from harness.models.batching import row_ids

N_USERS, N_ITEMS = 12, 30


def _clicks(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = (rng.random((N_USERS, N_ITEMS)) < 0.2).astype(np.float32)
    x[0] = 0.0  # an empty user must not produce NaN
    x[1, :3] = 1.0
    return sp.csr_matrix(x)


def _as_sparse_tensor(x: sp.csr_matrix) -> tf.SparseTensor:
    indices = np.stack([row_ids(x), x.indices], axis=1).astype(np.int64)
    return tf.SparseTensor(indices, x.data, x.shape)


def _numpy_forward(model, x: np.ndarray, eps: np.ndarray, l2_normalise: bool):
    net = model.network

    def dense(layer, h, act=None):
        out = h @ layer.kernel.numpy() + layer.bias.numpy()
        return np.tanh(out) if act == "tanh" else out

    h = x.astype(np.float64)
    if l2_normalise:
        h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-6)
    h = dense(net.encoder_layers[0], h, "tanh")
    mu, log_var = dense(net.mu_layer, h), dense(net.log_var_layer, h)
    z = mu + np.exp(log_var / 2) * eps
    logits = dense(net.output_layer, dense(net.decoder_layers[0], z, "tanh"))
    kl = 0.5 * np.sum(-1 - log_var + mu**2 + np.exp(log_var), axis=1)
    return logits, kl


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_standard_vae_loss_matches_numpy(activation: str) -> None:
    model = StandardVAE(
        N_USERS, N_ITEMS, 8, 4, verbose=0, k=10, beta=0.7, seed=3, output_activation=activation
    )
    x = _clicks()
    eps = np.random.default_rng(1).standard_normal((N_USERS, 4)).astype(np.float32)
    loss, recon, kl = model.network.per_user_loss(_as_sparse_tensor(x), epsilon=eps)
    logits, kl_np = _numpy_forward(model, x.toarray(), eps, l2_normalise=False)
    dense_x = x.toarray()
    if activation == "softmax":
        # original_dim * mean over items of Keras' clipped binary cross-entropy
        p = np.clip(_softmax(logits), 1e-7, 1 - 1e-7)
        bce = -(dense_x * np.log(p) + (1 - dense_x) * np.log(1 - p))
        recon_np = N_ITEMS * bce.mean(axis=1)
    else:
        p = 1 / (1 + np.exp(-logits))
        recon_np = -(dense_x * np.log(p) + (1 - dense_x) * np.log(1 - p)).sum(axis=1)
    np.testing.assert_allclose(recon.numpy(), recon_np, rtol=2e-4)
    np.testing.assert_allclose(kl.numpy(), kl_np, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(loss.numpy(), recon_np + 0.7 * kl_np, rtol=2e-4)


def test_mult_vae_loss_matches_numpy() -> None:
    model = MultVAE(N_USERS, N_ITEMS, 8, 4, verbose=0, k=10, beta=0.3, seed=5)
    x = _clicks(2)
    eps = np.random.default_rng(4).standard_normal((N_USERS, 4)).astype(np.float32)
    loss, _, _ = model.network.per_user_loss(_as_sparse_tensor(x), epsilon=eps)
    logits, kl_np = _numpy_forward(model, x.toarray(), eps, l2_normalise=True)
    log_softmax = np.log(_softmax(logits))
    recon_np = -(x.toarray() * log_softmax).sum(axis=1)
    np.testing.assert_allclose(loss.numpy(), recon_np + 0.3 * kl_np, rtol=2e-4, atol=1e-5)
    assert np.isfinite(loss.numpy()).all()


def test_train_step_reads_the_beta_variable() -> None:
    model = MultVAE(N_USERS, N_ITEMS, 8, 4, verbose=0, k=10, seed=5)
    x = _as_sparse_tensor(_clicks())
    eps = np.zeros((N_USERS, 4), np.float32)
    model.beta_variable.assign(0.25)
    loss, recon, kl = model.network.per_user_loss(x, epsilon=eps)
    np.testing.assert_allclose(loss.numpy(), (recon + 0.25 * kl).numpy(), rtol=1e-6)


def test_beta_schedule_is_linear_then_capped() -> None:
    beta = tf.Variable(0.0, trainable=False)
    callback = AnnealingCallback(beta, anneal_cap=0.3, total_anneal_steps=10)
    callback.on_train_begin()
    seen = []
    for step in range(1, 8):
        callback.on_train_batch_end(step - 1)
        seen.append(float(beta.numpy()))
    np.testing.assert_allclose(seen, [min(s / 10, 0.3) for s in range(1, 8)], rtol=1e-6)
    callback.on_epoch_end(0)
    assert callback.get_data() == [pytest.approx(0.3)]
    assert beta_at(5, 1.0, 10) == 0.5 and beta_at(50, 0.2, 10) == 0.2


def test_fit_anneals_per_batch_with_the_seed_formula() -> None:
    x = _clicks()
    model = StandardVAE(N_USERS, N_ITEMS, 8, 4, n_epochs=5, batch_size=5, verbose=0, k=10, seed=1,
                        annealing=True, anneal_cap=0.5)  # fmt: skip
    model.fit(x)
    batches = math.ceil(N_USERS / 5)  # the last partial batch counts
    total = (batches * (5 - int(0.2 * 5))) // 0.5
    assert model.total_anneal_steps_ == total
    expected = [min((e + 1) * batches / total, 0.5) for e in range(5)]
    np.testing.assert_allclose(model.history()["beta"], expected, rtol=1e-6)


def test_fixed_total_anneal_steps() -> None:
    model = MultVAE(N_USERS, N_ITEMS, 8, 4, n_epochs=2, batch_size=4, verbose=0, k=10, seed=1,
                    annealing=True, anneal_cap=1.0, total_anneal_steps=100)  # fmt: skip
    model.fit(_clicks())
    np.testing.assert_allclose(model.history()["beta"], [0.03, 0.06], rtol=1e-6)


def test_xla_compiled_adam_matches_the_plain_update(monkeypatch) -> None:
    import harness.models.base as base

    def run() -> list[float]:
        model = MultVAE(N_USERS, N_ITEMS, 8, 4, n_epochs=3, batch_size=5, verbose=0, k=10, seed=2)
        return model.fit(_clicks()).history()["loss"]

    plain = run()
    monkeypatch.setattr(base, "XLA_MIN_WEIGHT_STEPS", 0)
    compiled, again = run(), run()
    assert compiled == again  # XLA keeps a seeded run reproducible
    np.testing.assert_allclose(compiled, plain, rtol=1e-4)
