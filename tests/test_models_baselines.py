"""EASE and popularity against their closed forms; optional VAE architecture knobs."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from harness.models import EASE, MultVAE, Popularity, StandardVAE


def _clicks(n_users: int = 60, n_items: int = 20, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n_users, n_items)) < 0.3).astype(np.float32))


def test_ease_weights_match_the_closed_form() -> None:
    x = _clicks()
    ease = EASE(lam=7.0, k=5).fit(x)
    gram = x.toarray().astype(np.float64).T @ x.toarray()
    p = np.linalg.inv(gram + 7.0 * np.eye(20))
    b = np.eye(20) - p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    assert ease.B_.dtype == np.float32
    np.testing.assert_allclose(ease.B_, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ease.score(x[:3]), x[:3].toarray() @ b, rtol=1e-4, atol=1e-5)


def test_ease_lambda_grid_uses_the_eigendecomposition_exactly() -> None:
    x, val = _clicks(), _clicks(20, seed=1)
    val_te = sp.csr_matrix(val.toarray() * (np.arange(20) % 4 == 0))
    val_tr = val - val_te
    grid = EASE(k=5, lambdas=[3.0, 30.0]).fit(x, None, val_tr, val_te)
    single = EASE(lam=grid.lam_, k=5).fit(x)
    np.testing.assert_allclose(grid.B_, single.B_, rtol=1e-3, atol=1e-5)


def test_popularity_scores_are_training_counts() -> None:
    x = _clicks()
    pop = Popularity(k=5).fit(x)
    counts = x.toarray().sum(axis=0)
    scores = pop.score(x[:4])
    assert scores.shape == (4, 20) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores, np.tile(counts, (4, 1)))
    top = pop.recommend_k_items(np.zeros((1, 20), np.float32), 3, sparse=True)
    assert set(top.indices) == set(np.argsort(-counts, kind="stable")[:3])


def test_deeper_network_and_l2_penalty() -> None:
    x = _clicks()
    deep = MultVAE(60, 20, 8, 4, n_epochs=2, k=5, verbose=0, seed=1, n_hidden_layers=2)
    assert len(deep.network.encoder_layers) == 2 and len(deep.network.decoder_layers) == 2
    deep.fit(x)
    plain = StandardVAE(60, 20, 8, 4, n_epochs=1, k=5, verbose=0, seed=1).fit(x)
    penalised = StandardVAE(60, 20, 8, 4, n_epochs=1, k=5, verbose=0, seed=1, l2_penalty=1.0)
    penalised.fit(x)
    kernels = sum(
        float(np.sum(w.numpy() ** 2)) for w in plain.network.trainable_weights if w.ndim == 2
    )
    # same seed, same first batches: the penalty adds about sum of squared kernels per user
    assert penalised.history()["loss"][0] > plain.history()["loss"][0] + 0.5 * kernels
