"""The training loop's fast path gives the results of the loop it replaced, bit for bit.

``fit`` trains a run of batches per compiled call (all of an ml-100k epoch) with KL
annealing in-graph and produces batch events only when a callback listens. The reference
below is the loop as it was before (one compiled ``train_step`` and one host sync per batch,
``AnnealingCallback`` assigning beta from Python after every batch, the same epoch-end
callbacks). Same seed -> the same per-epoch NDCG, losses, beta and learning rate, and the
same final weights, compared with ``==`` (no tolerance): the same kernels run on the same
inputs in the same order, only the Python around them changed.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from harness.data import load_interactions, make_split
from harness.models import AnnealingCallback, LossHistory, Metrics, MultVAE, StandardVAE
from harness.models.batching import SparseBatches


@pytest.fixture(scope="module")
def ml100k():
    split = make_split(load_interactions("ml-100k", progress=False))
    return split.train, split.val_tr, split.val_te


def reference_fit(model, train, val_tr, val_te) -> dict[str, list[float]]:
    """The per-batch loop of commit c48973e (base.VAERecommender._run_epochs), verbatim in
    what it computes, on a freshly built ``model``; returns its history."""
    net = model.network
    batches = SparseBatches(train, model.batch_size, model.seed)
    valid = val_tr + val_te
    history, callbacks = LossHistory(), []
    if model.annealing:
        model.beta_variable.assign(0.0)
        callbacks.append(
            AnnealingCallback(model.beta_variable, model.anneal_cap, model.total_anneal_steps)
        )
    callbacks += [Metrics(net, val_tr, val_te, None, model.k), history]
    if model.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=model.plateau_factor, patience=model.plateau_patience,
            min_lr=model.plateau_min_lr))  # fmt: skip
    cbs = keras.callbacks.CallbackList(callbacks, model=net)
    cbs.on_train_begin()
    for epoch in range(model.n_epochs):
        cbs.on_epoch_begin(epoch)
        total = 0.0
        for step, parts in enumerate(batches.epoch()):
            batch_sum = float(net.train_components(*parts))
            total += batch_sum
            cbs.on_train_batch_end(step, {"loss": batch_sum / parts[3]})
        logs = {
            "loss": total / train.shape[0],
            "val_loss": net.loss_sum(valid) / valid.shape[0],
            "beta": float(model.beta_variable.numpy()),
            "lr": float(np.asarray(net.optimizer.learning_rate)),
        }
        cbs.on_epoch_end(epoch, logs)
    return history.per_epoch


CASES = {
    "standard-vae, plateau, annealing": (
        StandardVAE, dict(annealing=True, anneal_cap=0.2, lr_schedule="plateau")),
    "mult-vae, constant rate, annealing, 2 layers": (
        MultVAE, dict(annealing=True, anneal_cap=0.3, n_hidden_layers=2)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_fit_replays_the_per_batch_loop_on_ml100k(ml100k, case) -> None:
    train, val_tr, val_te = ml100k
    cls, extra = CASES[case]

    def build():
        return cls(train.shape[0], train.shape[1], n_epochs=4, batch_size=100, k=100,
                   verbose=0, seed=11, **extra)  # fmt: skip

    fitted = build().fit(train, None, val_tr, val_te)
    reference = build()
    expected = reference_fit(reference, train, val_tr, val_te)
    assert fitted.history() == expected  # exact floats, every key and epoch
    assert all(math.isfinite(v) for v in expected["ndcg"]) and expected["beta"][0] > 0
    # after the last epoch (fit then restores the best epoch's weights; the reference
    # doesn't), both networks took the same steps: compare the optimizer states
    for mine, theirs in zip(
        fitted.network.optimizer.variables, reference.network.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_batch_events_do_not_change_results(ml100k) -> None:
    """A callback with a batch hook (or the progress bar) switches to one call per batch:
    it sees every batch, and the run is the same as without it."""
    train, val_tr, val_te = ml100k
    seen: list[tuple[int, float, float]] = []

    def build():
        return MultVAE(train.shape[0], train.shape[1], n_epochs=2, k=100, verbose=0, seed=3,
                       annealing=True, anneal_cap=0.5)  # fmt: skip

    calls: list[int] = []

    def count_calls(model):  # a spy: counts the compiled training calls, runs them unchanged
        compiled = model.network.train_batches

        def spy(*args):
            calls.append(len(args[3]) - 1)  # batches in this call
            return compiled(*args)

        model.network.train_batches = spy
        return model

    quiet = count_calls(build()).fit(train, None, val_tr, val_te)
    n_batches = quiet.number_of_batches
    assert calls == [n_batches, n_batches]  # one call per epoch
    calls.clear()
    listener = count_calls(build())
    beta = listener.beta_variable
    hook = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append((b, logs["loss"], float(beta.numpy())))
    )
    listener.fit(train, None, val_tr, val_te, callbacks=[hook])
    assert listener.history() == quiet.history()
    assert calls == [1] * (2 * n_batches)  # one call per batch
    assert [b for b, _, _ in seen] == list(range(n_batches)) * 2
    # beta after batch s (1-based over the fit) is min(s / total, cap), as AnnealingCallback
    total = listener.total_anneal_steps
    expected = [np.float32(min(s / total, 0.5)) for s in range(1, 2 * n_batches + 1)]
    assert [b for _, _, b in seen] == [float(v) for v in expected]
    # the epoch loss is the users' mean of the batch losses
    sizes = [100] * (n_batches - 1) + [train.shape[0] - 100 * (n_batches - 1)]
    first_epoch = sum(loss * n for (_, loss, _), n in zip(seen[:n_batches], sizes, strict=True))
    assert first_epoch / train.shape[0] == pytest.approx(listener.history()["loss"][0], rel=1e-12)


def _with_keras_apply(model):
    """``model`` whose network updates through ``optimizer.apply`` (Keras' own Adam code),
    set before anything is traced."""
    import tensorflow as tf

    net = model.network
    net.apply_gradients = tf.function(
        lambda grads: net.optimizer.apply(grads, net.trainable_weights)
    )
    return model


@pytest.mark.parametrize("cls", [StandardVAE, MultVAE])
def test_written_out_adam_equals_keras_adam(ml100k, cls) -> None:
    """The network's own Adam update (``VAENetwork._apply_gradients``) gives the weights and
    optimizer state of ``keras.optimizers.Adam.apply``, bit for bit, over a fit whose
    learning rate changes on the way (halved from epoch 2 by a Keras callback)."""
    train, val_tr, val_te = ml100k

    def build():
        return cls(train.shape[0], train.shape[1], n_epochs=4, batch_size=100, k=100, verbose=0,
                   seed=5, lr_schedule="constant", adam_epsilon=1e-8, annealing=True,
                   anneal_cap=0.5)  # fmt: skip

    def halve():
        return keras.callbacks.LearningRateScheduler(lambda e, lr: lr / 2 if e == 2 else lr)

    mine = build().fit(train, None, val_tr, val_te, callbacks=[halve()])
    keras_adam = _with_keras_apply(build()).fit(train, None, val_tr, val_te, callbacks=[halve()])
    assert mine.history() == keras_adam.history()
    assert len(set(mine.history()["lr"])) == 2  # the rate changed
    for a, b in zip(
        mine.network.optimizer.variables, keras_adam.network.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(mine.network.get_weights(), keras_adam.network.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_other_optimizers_go_through_keras(ml100k) -> None:
    """A network compiled with an Adam the written-out update does not cover (amsgrad) trains
    with Keras' own update: its extra state moves."""
    train, val_tr, val_te = ml100k
    model = MultVAE(train.shape[0], train.shape[1], n_epochs=1, k=100, verbose=0, seed=2)
    optimizer = keras.optimizers.Adam(1e-3, amsgrad=True)
    model.network.compile(optimizer=optimizer)
    optimizer.build(model.network.trainable_variables)
    model.fit(train, None, val_tr, val_te)
    assert int(optimizer.iterations.numpy()) == model.number_of_batches
    assert any(np.abs(np.asarray(v)).sum() > 0 for v in optimizer._velocity_hats)
