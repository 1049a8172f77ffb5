"""MultVAE against an independent NumPy implementation of Liang et al.'s training step.

The reference below follows the paper's code (dawenl/vae_cf, ``MultiVAE``): L2-normalised
input, tanh MLP encoder to (mu, log_var), z = mu + exp(log_var / 2) * epsilon, tanh MLP
decoder to logits; loss = mean over users of -sum_j x_j log_softmax(logits)_j plus beta
times the mean KL; TF1 ``AdamOptimizer`` (lr 1e-3, beta1 0.9, beta2 0.999, epsilon 1e-8).
Gradients are derived by hand, in float64. Dropout is off (drop_encoder=0) and epsilon is
given, so the step is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from harness.models import MultVAE
from harness.models.batching import row_ids

N_USERS, N_ITEMS, HIDDEN, LATENT = 16, 40, 12, 5
LAYERS = ("enc", "mu", "lv", "dec", "out")


def _clicks(seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = (rng.random((N_USERS, N_ITEMS)) < 0.15).astype(np.float32)
    x[0] = 0.0  # an empty user: l2-normalised to 0, contributes no likelihood
    return sp.csr_matrix(x)


def _sparse_tensor(x: sp.csr_matrix) -> tf.SparseTensor:
    indices = np.stack([row_ids(x), x.indices], axis=1).astype(np.int64)
    return tf.SparseTensor(indices, x.data, x.shape)


def _weights(model: MultVAE) -> dict[str, list[np.ndarray]]:
    net = model.network
    layers = [net.encoder_layers[0], net.mu_layer, net.log_var_layer, net.decoder_layers[0],
              net.output_layer]  # fmt: skip
    return {
        name: [layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)]
        for name, layer in zip(LAYERS, layers, strict=True)
    }


def _gradients(w: dict, x: np.ndarray, eps: np.ndarray, beta: float) -> dict:
    """d loss / d weights of Liang's MultiVAE loss for one batch, by hand."""
    n = x.shape[0]
    norm = np.sqrt(np.maximum((x**2).sum(axis=1, keepdims=True), 1e-12))
    xn = x / norm
    h1 = np.tanh(xn @ w["enc"][0] + w["enc"][1])
    mu = h1 @ w["mu"][0] + w["mu"][1]
    lv = h1 @ w["lv"][0] + w["lv"][1]
    z = mu + np.exp(0.5 * lv) * eps
    h2 = np.tanh(z @ w["dec"][0] + w["dec"][1])
    logits = h2 @ w["out"][0] + w["out"][1]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax = e / e.sum(axis=1, keepdims=True)
    d_logits = (softmax * x.sum(axis=1, keepdims=True) - x) / n
    d_h2 = d_logits @ w["out"][0].T
    d_a2 = d_h2 * (1 - h2**2)
    d_z = d_a2 @ w["dec"][0].T
    d_mu = d_z + beta * mu / n
    d_lv = d_z * eps * 0.5 * np.exp(0.5 * lv) + beta * 0.5 * (np.exp(lv) - 1) / n
    d_h1 = d_mu @ w["mu"][0].T + d_lv @ w["lv"][0].T
    d_a1 = d_h1 * (1 - h1**2)
    return {
        "enc": [xn.T @ d_a1, d_a1.sum(axis=0)],
        "mu": [h1.T @ d_mu, d_mu.sum(axis=0)],
        "lv": [h1.T @ d_lv, d_lv.sum(axis=0)],
        "dec": [z.T @ d_a2, d_a2.sum(axis=0)],
        "out": [h2.T @ d_logits, d_logits.sum(axis=0)],
    }


class NumpyAdam:
    """TF1 AdamOptimizer: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), w -= lr_t m / (sqrt(v) + eps)."""

    def __init__(self, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m: dict = {}
        self.v: dict = {}

    def step(self, w: dict, grads: dict) -> None:
        self.t += 1
        lr_t = self.lr * np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        for name in w:
            for i, g in enumerate(grads[name]):
                key = (name, i)
                self.m[key] = self.b1 * self.m.get(key, 0.0) + (1 - self.b1) * g
                self.v[key] = self.b2 * self.v.get(key, 0.0) + (1 - self.b2) * g**2
                w[name][i] = w[name][i] - lr_t * self.m[key] / (np.sqrt(self.v[key]) + self.eps)


def _max_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[n][i] - b[n][i]).max()) for n in a for i in range(2))


def test_training_steps_match_numpy_reference() -> None:
    model = MultVAE(N_USERS, N_ITEMS, HIDDEN, LATENT, verbose=0, k=10, drop_encoder=0.0,
                    beta=0.3, seed=11)  # fmt: skip
    reference = _weights(model)
    adam, adam_keras_eps = NumpyAdam(eps=1e-8), NumpyAdam(eps=1e-7)
    other = {n: [a.copy() for a in ws] for n, ws in reference.items()}
    rng = np.random.default_rng(3)
    for step in range(2):  # the second step exercises Adam's moment updates
        x = _clicks(step)
        eps = rng.standard_normal((N_USERS, LATENT)).astype(np.float32)
        model.network.train_step(_sparse_tensor(x), epsilon=eps)
        grads = _gradients(reference, x.toarray().astype(np.float64), eps, 0.3)
        adam.step(reference, grads)
        adam_keras_eps.step(other, _gradients(other, x.toarray().astype(np.float64), eps, 0.3))
        assert _max_diff(_weights(model), reference) < 1e-5, f"step {step + 1}"
    # the comparison is sharp enough to tell Adam's epsilon 1e-8 (Liang) from 1e-7 (Keras)
    assert _max_diff(reference, other) > 1e-5


def test_liang_initialisation() -> None:
    model = MultVAE(2000, 3000, 600, 200, verbose=0, k=10, seed=0)
    w = _weights(model)
    for name in LAYERS:
        bias = w[name][1]
        assert np.abs(bias).max() <= 0.002 + 1e-9  # truncated at 2 sd
        assert bias.std() == pytest.approx(0.00088, rel=0.1)  # sd of N(0, 0.001) cut at 2 sd
    # Glorot uniform; mu and log_var get the range of Liang's joint 600 x 400 matrix
    for name, (fan_in, fan_out) in {"enc": (3000, 600), "mu": (600, 400), "lv": (600, 400),
                                    "dec": (200, 600), "out": (600, 3000)}.items():  # fmt: skip
        limit = np.sqrt(6 / (fan_in + fan_out))
        kernel = w[name][0]
        assert np.abs(kernel).max() <= limit * (1 + 1e-6)  # float32
        assert np.abs(kernel).max() == pytest.approx(limit, rel=0.02)
    assert model.network.optimizer.epsilon == pytest.approx(1e-8)
    assert model.drop_decoder == 0.0


# --- Mult-DAE: Liang et al.'s MultiDAE step -------------------------------------------------
DAE_LAYERS = ("enc", "code", "dec", "out")


def _dae_weights(model) -> dict[str, list[np.ndarray]]:
    net = model.network
    layers = [net.encoder_layers[0], net.mu_layer, net.decoder_layers[0], net.output_layer]
    return {
        name: [layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)]
        for name, layer in zip(DAE_LAYERS, layers, strict=True)
    }


def _dae_gradients(w: dict, x: np.ndarray, reg: float) -> dict:
    """d loss / d weights of MultiDAE's loss, by hand: tanh on every hidden layer (the code
    too), loss = mean_u -sum_j x_uj log_softmax_j + 2 * reg_var with reg_var =
    l2_regularizer(reg)(kernels) = reg * sum(w**2) / 2, i.e. + reg * sum of squared kernels."""
    n = x.shape[0]
    norm = np.sqrt(np.maximum((x**2).sum(axis=1, keepdims=True), 1e-12))
    xn = x / norm
    h1 = np.tanh(xn @ w["enc"][0] + w["enc"][1])
    code = np.tanh(h1 @ w["code"][0] + w["code"][1])
    h2 = np.tanh(code @ w["dec"][0] + w["dec"][1])
    logits = h2 @ w["out"][0] + w["out"][1]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax = e / e.sum(axis=1, keepdims=True)
    d_logits = (softmax * x.sum(axis=1, keepdims=True) - x) / n
    d_a3 = (d_logits @ w["out"][0].T) * (1 - h2**2)
    d_a2 = (d_a3 @ w["dec"][0].T) * (1 - code**2)
    d_a1 = (d_a2 @ w["code"][0].T) * (1 - h1**2)
    inputs = {"enc": xn, "code": h1, "dec": code, "out": h2}
    deltas = {"enc": d_a1, "code": d_a2, "dec": d_a3, "out": d_logits}
    return {
        name: [inputs[name].T @ deltas[name] + 2 * reg * w[name][0], deltas[name].sum(axis=0)]
        for name in DAE_LAYERS
    }


def test_mult_dae_steps_match_liangs_multidae() -> None:
    from harness.models.mult_dae import MultDAE

    batch, lam = N_USERS, 0.3  # Liang's notebook: MultiDAE(lam=0.01 / batch_size)
    model = MultDAE(N_USERS, N_ITEMS, HIDDEN, LATENT, batch_size=batch, verbose=0, k=10,
                    drop_encoder=0.0, lam=lam, seed=11)  # fmt: skip
    reference = _dae_weights(model)
    no_decay = {n: [a.copy() for a in ws] for n, ws in reference.items()}
    adam, adam_no_decay = NumpyAdam(eps=1e-8), NumpyAdam(eps=1e-8)
    for step in range(2):
        x = _clicks(step)
        model.network.train_step(_sparse_tensor(x))
        dense = x.toarray().astype(np.float64)
        adam.step(reference, _dae_gradients(reference, dense, lam / batch))
        adam_no_decay.step(no_decay, _dae_gradients(no_decay, dense, 0.0))
        assert _max_diff(_dae_weights(model), reference) < 1e-5, f"step {step + 1}"
    # the comparison is sharp enough to see the weight decay
    assert _max_diff(reference, no_decay) > 1e-5
    assert model.network.log_var_layer is None and model.network.optimizer.epsilon == 1e-8


def test_mult_dae_liang_initialisation() -> None:
    from harness.models.mult_dae import MultDAE

    model = MultDAE(2000, 3000, verbose=0, k=10, seed=0)  # 600-200 by default
    w = _dae_weights(model)
    for name, (fan_in, fan_out) in {"enc": (3000, 600), "code": (600, 200), "dec": (200, 600),
                                    "out": (600, 3000)}.items():  # fmt: skip
        limit = np.sqrt(6 / (fan_in + fan_out))
        assert np.abs(w[name][0]).max() == pytest.approx(limit, rel=0.02)
        assert np.abs(w[name][1]).max() <= 0.002 + 1e-9
    assert model.drop_encoder == 0.5 and model.lam == 0.01 and model.batch_size == 500
