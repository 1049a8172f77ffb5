"""A process that trains model after model (a pool worker) does not keep their graphs.

``tf.custom_gradient`` (the sparse first layer) registers each trace's gradient under a new
global name that TensorFlow never drops, and that entry kept the whole traced graph alive:
~29 MiB per ml-100k trial. ``forget_traced_gradients`` drops the entries; what a sweep trial
does after training (``harness.devices.free_model_memory``) must leave no graph behind.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import scipy.sparse as sp

from harness.devices import free_model_memory
from harness.models import MultVAE
from harness.models.sparse_ops import forget_traced_gradients


@pytest.fixture(scope="module")
def clicks():
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((120, 60)) < 0.15).astype(np.float32))
    return x[:100], x[100:], x[100:]


def _graph_ops() -> int:
    from tensorflow.python.framework import ops

    gc.collect()
    return sum(isinstance(o, ops.Operation) for o in gc.get_objects())


def _fit(clicks, seed: int, epochs: int = 1) -> MultVAE:
    train, val_tr, val_te = clicks
    model = MultVAE(train.shape[0], train.shape[1], intermediate_dim=16, latent_dim=4,
                    n_epochs=epochs, batch_size=25, k=10, verbose=0, seed=seed)  # fmt: skip
    return model.fit(train, None, val_tr, val_te)


def test_a_trial_leaves_no_graph_behind(clicks) -> None:
    _fit(clicks, 0)  # warm-up: first-use caches of TensorFlow and Keras
    free_model_memory()
    before = _graph_ops()
    for seed in range(3):
        model = _fit(clicks, seed)
        del model
        free_model_memory()
    after = _graph_ops()
    assert after - before < 50, f"{after - before} graph operations outlived 3 trials"


def test_without_forgetting_the_graphs_stay(clicks) -> None:
    """The leak the fix removes is real: Keras' clear_session alone keeps each graph."""
    import keras

    _fit(clicks, 0)
    keras.backend.clear_session()
    forget_traced_gradients()
    before = _graph_ops()
    model = _fit(clicks, 1)
    del model
    keras.backend.clear_session()
    kept = _graph_ops() - before
    assert kept > 200
    assert forget_traced_gradients() > 0
    assert _graph_ops() - before < 50


def test_forgetting_does_not_change_a_live_model(clicks) -> None:
    """A model fitted again after the entries went (its traced training function is reused)
    gives the results of one that kept them."""
    train, val_tr, val_te = clicks
    kept = _fit(clicks, 7)
    kept.fit(train, None, val_tr, val_te)  # its second fit with the gradient entries present
    forgot = _fit(clicks, 7)
    assert forget_traced_gradients() > 0
    forgot.fit(train, None, val_tr, val_te)
    assert forgot.history() == kept.history()
    for wa, wb in zip(forgot.network.get_weights(), kept.network.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
