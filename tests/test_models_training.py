"""Training behaviour on planted low-rank data: learning, determinism, hooks, divergence."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import scipy.sparse as sp

from harness.evaluation import ndcg_at_k
from harness.models import EASE, MultVAE, Popularity, StandardVAE, TrainingDivergedError

N_TRAIN, N_VAL, N_ITEMS, K = 400, 100, 120, 100


def planted_split(seed: int = 0):
    """Users click 15 items drawn from softmax(rank-3 affinity + popularity bias).

    Returns (train, val_tr, val_te): CSR float32; each validation user holds out 3 clicks.
    """
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((N_TRAIN + N_VAL, 3))
    items = rng.standard_normal((N_ITEMS, 3))
    logits = 2.0 * users @ items.T + np.linspace(1.5, 0.0, N_ITEMS)
    gumbel = -np.log(-np.log(rng.random(logits.shape)))
    clicked = np.argsort(-(logits + gumbel), axis=1)[:, :15]  # sampling without replacement
    x = np.zeros(logits.shape, np.float32)
    np.put_along_axis(x, clicked, 1.0, axis=1)
    val_te = np.zeros((N_VAL, N_ITEMS), np.float32)
    np.put_along_axis(val_te, clicked[N_TRAIN:, :3], 1.0, axis=1)
    val_tr = x[N_TRAIN:] - val_te
    return sp.csr_matrix(x[:N_TRAIN]), sp.csr_matrix(val_tr), sp.csr_matrix(val_te)


@pytest.fixture(scope="module")
def split():
    return planted_split()


def _vae(cls, **kw):
    params = dict(intermediate_dim=32, latent_dim=8, n_epochs=3, batch_size=50, k=K,
                  verbose=0, seed=7)  # fmt: skip
    params.update(kw)
    return cls(N_TRAIN, N_ITEMS, **params)


def _popularity_ndcg(split) -> float:
    train, val_tr, val_te = split
    return Popularity(k=K).fit(train, None, val_tr, val_te).best_ndcg


@pytest.mark.parametrize("cls", [StandardVAE, MultVAE])
def test_vaes_beat_popularity(split, cls) -> None:
    train, val_tr, val_te = split
    model = _vae(cls, n_epochs=12, drop_encoder=0.2, drop_decoder=0.0, learning_rate=3e-3)
    model.fit(train, None, val_tr, val_te)
    assert model.best_ndcg > _popularity_ndcg(split) + 0.03
    # the best weights are restored: scoring now reproduces the best epoch's NDCG
    again = np.nanmean(ndcg_at_k(model.score(val_tr), val_te, val_tr, K))
    assert again == pytest.approx(model.best_ndcg, abs=1e-6)
    assert model.best_epoch == int(np.nanargmax(model.ndcg_per_epoch()))


def test_ease_beats_popularity(split) -> None:
    train, val_tr, val_te = split
    ease = EASE(k=K, lambdas=[1.0, 10.0, 100.0]).fit(train, None, val_tr, val_te)
    assert ease.best_ndcg > _popularity_ndcg(split) + 0.03
    assert ease.lam_ in (1.0, 10.0, 100.0)
    assert ease.best_ndcg == pytest.approx(max(ease.lambda_ndcg_.values()))
    single = EASE(lam=ease.lam_, k=K).fit(train, None, val_tr, val_te)
    assert single.best_ndcg == pytest.approx(ease.best_ndcg, abs=1e-6)


def test_same_seed_same_curves_and_sparse_equals_dense(split) -> None:
    train, val_tr, val_te = split
    first = _vae(MultVAE).fit(train, None, val_tr, val_te).history()
    second = _vae(MultVAE).fit(train.toarray(), None, val_tr.toarray(), val_te.toarray()).history()
    assert first["ndcg"] == second["ndcg"]
    assert first["loss"] == second["loss"] and first["val_loss"] == second["val_loss"]
    other = _vae(MultVAE, seed=8).fit(train, None, val_tr, val_te).history()
    assert other["loss"] != first["loss"]


def test_history_and_optimal_beta(split) -> None:
    train, val_tr, val_te = split
    model = _vae(StandardVAE, n_epochs=4, annealing=True, anneal_cap=0.4)
    model.fit(train, None, val_tr, val_te)
    hist = model.history()
    assert set(hist) == {"ndcg", "loss", "val_loss", "beta", "lr"}
    assert all(len(values) == 4 for values in hist.values())
    assert all(math.isfinite(v) for key in hist for v in hist[key])
    best = int(np.argmax(hist["ndcg"]))
    assert model.best_epoch == best and model.get_optimal_beta() == hist["beta"][best]
    assert hist["beta"] == sorted(hist["beta"])  # annealing only grows
    assert all(lr in (pytest.approx(1e-3), pytest.approx(2e-4), pytest.approx(1e-4))
               for lr in hist["lr"])  # fmt: skip
    constant = _vae(StandardVAE, n_epochs=1, beta=0.3).fit(train, None, val_tr, val_te)
    assert constant.get_optimal_beta() == pytest.approx(0.3)


def test_epoch_callback_stops_and_sees_contract_logs(split) -> None:
    train, val_tr, val_te = split
    seen = []

    def hook(epoch: int, logs: dict) -> bool:
        seen.append((epoch, logs))
        return epoch == 1

    model = _vae(MultVAE, n_epochs=5).fit(train, None, val_tr, val_te, epoch_callback=hook)
    assert [epoch for epoch, _ in seen] == [0, 1]
    assert set(seen[0][1]) == {"ndcg", "loss", "val_loss", "beta", "lr"}
    assert seen[1][1]["ndcg"] == model.ndcg_per_epoch()[1]
    assert len(model.ndcg_per_epoch()) == 2


def test_epoch_callback_exception_propagates(split) -> None:
    train, val_tr, val_te = split

    class Pruned(Exception):
        pass

    def hook(epoch: int, logs: dict) -> None:
        if epoch == 1:
            raise Pruned

    model = _vae(MultVAE, n_epochs=5)
    with pytest.raises(Pruned):
        model.fit(train, None, val_tr, val_te, epoch_callback=hook)
    assert len(model.ndcg_per_epoch()) == 2  # the history survives for the trial record


class _CountBatches(keras.callbacks.Callback):
    """A callback with a batch hook: the loop then makes one compiled call per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.batches += 1


@pytest.mark.parametrize("per_batch", [False, True])
def test_nan_loss_raises_naming_epoch_and_last_loss(split, per_batch) -> None:
    train, val_tr, val_te = split
    model = _vae(MultVAE, n_epochs=4)
    counter = _CountBatches()

    def poison(epoch: int, logs: dict) -> None:  # every loss of epoch 1 is NaN
        if epoch == 0:
            model.network.output_layer.bias.assign(np.full(N_ITEMS, np.nan, np.float32))

    with pytest.raises(
        TrainingDivergedError,
        match=r"epoch 1: training loss of batch 0 .*last finite epoch loss \d",
    ):
        model.fit(train, None, val_tr, val_te, epoch_callback=poison,
                  callbacks=[counter] if per_batch else None)  # fmt: skip
    # stopped at the first NaN batch (8 batches per epoch): no step ran after it
    assert int(model.network.optimizer.iterations.numpy()) == 9
    assert counter.batches == (8 if per_batch else 0)  # the guard raised before the others
    assert len(model.ndcg_per_epoch()) == 1


def test_huge_learning_rate_diverges(split) -> None:
    train, _, _ = split
    model = _vae(StandardVAE, n_epochs=5, learning_rate=1e6)
    with pytest.raises(TrainingDivergedError, match="learning_rate"):
        model.fit(train)


def test_fit_without_validation_keeps_final_weights(split) -> None:
    train, _, _ = split
    model = _vae(MultVAE, n_epochs=2).fit(train)
    hist = model.history()
    assert all(math.isnan(v) for v in hist["ndcg"] + hist["val_loss"])
    assert model.best_epoch == 1 and math.isnan(model.best_ndcg)
    assert hist["lr"] == [pytest.approx(1e-3)] * 2


def test_best_weights_saved_to_save_path(split, tmp_path) -> None:
    train, val_tr, val_te = split
    path = tmp_path / "best.weights.h5"
    model = _vae(MultVAE, n_epochs=2, save_path=str(path)).fit(train, None, val_tr, val_te)
    assert path.exists() and list(tmp_path.iterdir()) == [path]  # no temporary file left
    fresh = _vae(MultVAE, seed=99)
    fresh.load_weights(path)
    np.testing.assert_allclose(fresh.score(val_tr), model.score(val_tr), rtol=1e-6)


@pytest.mark.parametrize("name", ["weights.hdf5", "seed-style.h5", "model.keras"])
def test_save_path_is_a_file_keras_reads_and_recommend_loads_it(split, tmp_path, name) -> None:
    import keras

    train, val_tr, val_te = split
    path = tmp_path / name  # the seed's notebooks name it "svae_weights.hdf5"
    model = _vae(StandardVAE, n_epochs=2, save_path=str(path)).fit(train, None, val_tr, val_te)
    expected = model.recommend_k_items(val_tr, 10)
    network = keras.models.load_model(path)  # Keras itself reads the file
    np.testing.assert_allclose(network(val_tr.toarray()).numpy(), model.score(val_tr), atol=1e-6)
    plain = _vae(StandardVAE, seed=99)
    plain.network.load_weights(path)
    np.testing.assert_allclose(plain.score(val_tr), model.score(val_tr), rtol=1e-6)
    # a fresh model pointed at the file recommends with the saved weights, as the seed
    fresh = _vae(StandardVAE, seed=99, save_path=str(path))
    np.testing.assert_allclose(fresh.recommend_k_items(val_tr, 10), expected, rtol=1e-6)


def test_save_path_without_validation_holds_the_final_weights(split, tmp_path) -> None:
    train, val_tr, _ = split
    path = tmp_path / "final.weights.h5"
    model = _vae(MultVAE, n_epochs=1, save_path=str(path)).fit(train)
    fresh = _vae(MultVAE, seed=99, save_path=str(path))
    np.testing.assert_allclose(
        fresh.recommend_k_items(val_tr, 5), model.recommend_k_items(val_tr, 5), rtol=1e-6
    )
    with pytest.raises(FileNotFoundError, match="call fit first"):
        _vae(MultVAE, save_path=str(tmp_path / "none.weights.h5")).recommend_k_items(val_tr, 5)


@pytest.mark.parametrize("where, match", [
    ("missing/best.weights.h5", "does not exist"),
    ("best.txt", "must end in"),
])  # fmt: skip
def test_bad_save_path_fails_before_training(split, tmp_path, where, match) -> None:
    train, _, _ = split
    seen = []
    model = _vae(MultVAE, n_epochs=1, save_path=str(tmp_path / where))
    with pytest.raises(ValueError, match=match):
        model.fit(train, epoch_callback=lambda e, logs: seen.append(e))
    assert seen == []


def test_unwritable_save_path_folder_fails_before_training(split, tmp_path) -> None:
    import os

    train, _, _ = split
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        model = _vae(MultVAE, n_epochs=1, save_path=str(locked / "best.weights.h5"))
        with pytest.raises(ValueError, match="not writable"):
            model.fit(train)
        assert model.history()["loss"] == []
    finally:
        locked.chmod(0o700)


def test_keras_callbacks_run_alongside_the_internal_ones(split, tmp_path) -> None:
    import csv

    import keras

    train, val_tr, val_te = split

    class StopAfterSecondEpoch(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.batches = 0

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.batches += 1

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.model.stop_training = epoch == 1

    stopper = StopAfterSecondEpoch()
    log = tmp_path / "log.csv"
    model = _vae(MultVAE, n_epochs=4).fit(
        train, None, val_tr, val_te, callbacks=[keras.callbacks.CSVLogger(str(log)), stopper]
    )
    assert stopper.batches == 16 and stopper.model is model.network
    rows = list(csv.DictReader(log.open()))
    assert [float(r["ndcg"]) for r in rows] == pytest.approx(model.ndcg_per_epoch())
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(model.val_loss)
    with pytest.raises(ValueError, match="keras.callbacks.Callback"):
        _vae(MultVAE, n_epochs=1).fit(train, callbacks=[lambda e, logs: None])


@pytest.mark.parametrize("cls", [StandardVAE, MultVAE])
def test_plateau_in_validation_loss_reduces_learning_rate(split, monkeypatch, cls) -> None:
    train, val_tr, val_te = split
    model = _vae(cls, n_epochs=4, lr_schedule="plateau")
    # a validation loss that never improves: factor 0.2 after each epoch, floor 1e-4
    monkeypatch.setattr(model.network, "loss_sum", lambda x: 50.0 * x.shape[0])
    model.fit(train, None, val_tr, val_te)
    np.testing.assert_allclose(model.history()["lr"], [1e-3, 1e-3, 2e-4, 1e-4], rtol=1e-5)
    tuned = _vae(cls, n_epochs=4, lr_schedule="plateau", plateau_factor=0.5, plateau_patience=0,
                 plateau_min_lr=3e-4)  # fmt: skip
    monkeypatch.setattr(tuned.network, "loss_sum", lambda x: 50.0 * x.shape[0])
    tuned.fit(train, None, val_tr, val_te)
    np.testing.assert_allclose(tuned.history()["lr"], [1e-3, 1e-3, 5e-4, 3e-4], rtol=1e-5)


def test_mult_vae_learning_rate_is_constant_by_default(split, monkeypatch) -> None:
    train, val_tr, val_te = split
    model = _vae(MultVAE, n_epochs=4, annealing=True, anneal_cap=0.2)
    # the same never-improving validation loss that the plateau would cut the rate on
    monkeypatch.setattr(model.network, "loss_sum", lambda x: 50.0 * x.shape[0])
    model.fit(train, None, val_tr, val_te)
    assert model.lr_schedule == "constant"
    assert model.history()["lr"] == [pytest.approx(1e-3)] * 4
    assert float(np.asarray(model.network.optimizer.learning_rate)) == pytest.approx(1e-3)


@pytest.mark.parametrize("kwargs, match", [
    ({"lr_schedule": "cosine"}, r"lr_schedule='cosine' is unknown.*'plateau', 'constant'"),
    ({"plateau_factor": 1.0}, "plateau_factor"),
    ({"plateau_patience": -1}, "plateau_patience"),
    ({"plateau_min_lr": -1.0}, "plateau_min_lr"),
    ({"adam_epsilon": 0.0}, "adam_epsilon"),
])  # fmt: skip
def test_bad_schedule_arguments_raise(kwargs, match) -> None:
    for cls in (StandardVAE, MultVAE):
        with pytest.raises(ValueError, match=match):
            _vae(cls, **kwargs)


def test_metrics_callback_standalone(split) -> None:
    from harness.models import Metrics

    train, val_tr, val_te = split
    model = _vae(StandardVAE)
    metrics = Metrics(model.network, val_tr, val_te, None, K)
    metrics.on_train_begin()
    logs: dict = {}
    metrics.on_epoch_end(0, logs)
    expected = np.nanmean(ndcg_at_k(model.score(val_tr), val_te, val_tr, K))
    assert logs["ndcg"] == pytest.approx(expected, abs=1e-9)
    assert metrics.get_data() == [logs["ndcg"]] and metrics.best_epoch == 0
    top = metrics.recommend_k_items(val_tr, 5, sparse=True)
    assert (np.diff(top.indptr) == 5).all() and not top.multiply(val_tr).nnz
    np.testing.assert_array_equal(metrics.recommend_k_items(val_tr, 5), top.toarray())


def test_verbose_progress_bar_runs(split, capsys) -> None:
    train, val_tr, val_te = split
    _vae(MultVAE, n_epochs=1, verbose=1).fit(train, None, val_tr, val_te)
    assert "loss" in capsys.readouterr().out
