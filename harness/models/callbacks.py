"""Keras callbacks that the VAE training loop runs (seed names and signatures kept).

The loop in ``base.py`` drives them through ``keras.callbacks.CallbackList`` as
``model.fit`` would: ``on_epoch_end`` with logs holding "loss", "val_loss", "beta" and "lr"
(``Metrics`` adds "ndcg"), and ``on_train_batch_end`` after every batch whenever a callback
has a batch hook (``wants_batch_events``); without one the batches of an epoch run in one
compiled call. ``AnnealingCallback``'s schedule runs inside that call; the class stays for
use on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
import scipy.sparse as sp

from harness.models.batching import ndcg_from_top, top_to_csr, top_to_dense
from harness.models.persistence import save_network

HISTORY_KEYS = ("ndcg", "loss", "val_loss", "beta", "lr")
EpochCallback = Callable[[int, dict], "bool | None"]


BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end")


def wants_batch_events(callback: keras.callbacks.Callback) -> bool:
    """True when ``callback`` does something per batch: a batch hook defined by its class
    (not Keras' no-op) or set on the instance (``keras.callbacks.LambdaCallback``)."""
    base = keras.callbacks.Callback
    return any(
        name in vars(callback) or getattr(type(callback), name) is not getattr(base, name)
        for name in BATCH_HOOKS
    )


class TrainingDivergedError(RuntimeError):
    """The training or validation loss became NaN or infinite."""


def beta_at(step: int, anneal_cap: float, total_anneal_steps: float) -> float:
    """KL weight after ``step`` batches: min(step / total_anneal_steps, anneal_cap)."""
    return min(step / total_anneal_steps, anneal_cap)


def seed_total_anneal_steps(batches_per_epoch: int, n_epochs: int, anneal_cap: float) -> float:
    """The seed's default: floor(batches_per_epoch * (n_epochs - int(0.2 * n_epochs)) / cap).

    Beta then reaches the cap after 80% of the epochs whatever the cap (so the slope depends
    on it). At least 1, so a one-batch, one-epoch run still has a defined schedule.
    """
    return max(1.0, (batches_per_epoch * (n_epochs - int(0.2 * n_epochs))) // anneal_cap)


class EarlyStopping(keras.callbacks.Callback):
    """Stops training after ``patience`` epochs without a better validation NDCG than the
    best so far (the ``Metrics`` callback's, which runs first and keeps its weights)."""

    def __init__(self, metrics: Metrics, patience: int) -> None:
        super().__init__()
        self.metrics, self.patience = metrics, patience

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        best = self.metrics.best_epoch
        if best is not None and epoch - best >= self.patience:
            self.model.stop_training = True


class LossHistory(keras.callbacks.Callback):
    """Records training and validation loss per epoch (and every other logged value)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_train_begin()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.losses: list[float] = []
        self.val_losses: list[float] = []
        self.per_epoch: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.losses.append(logs.get("loss", math.nan))
        self.val_losses.append(logs.get("val_loss", math.nan))
        for key in HISTORY_KEYS:
            self.per_epoch[key].append(float(logs.get(key, math.nan)))


class Metrics(keras.callbacks.Callback):
    """Validation NDCG@k after every epoch; keeps (and optionally saves) the best weights.

    Args:
        model: the ``VAENetwork`` (anything with ``rank``, ``get_weights``, ``save_weights``).
        val_tr: fold-in clicks of the validation users (CSR); their items are not ranked.
        val_te: held-out clicks of the same users (CSR), the truth.
        mapper: accepted for seed API parity and ignored: the metric works on matrices.
        k: cut-off of NDCG@k.
        save_path: when given, the best weights are written there in the format its suffix
            names (see ``harness.models.persistence.save_network``), to a temporary file
            renamed into place, so a crash never leaves half a file.

    The best epoch is the first one with the highest NDCG; a NaN NDCG never counts as best.
    """

    def __init__(self, model, val_tr, val_te, mapper, k: int, save_path=None) -> None:
        super().__init__()
        self.set_model(model)
        self.val_tr = sp.csr_matrix(val_tr)
        self.val_te = sp.csr_matrix(val_te)
        self.mapper = mapper
        self.k = k
        self.save_path = save_path
        self.best_ndcg = -math.inf
        self.best_epoch: int | None = None
        self.best_weights: list[np.ndarray] | None = None
        self._data: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._data = []

    def recommend_k_items(self, x, k: int, remove_seen: bool = True, *, sparse: bool = False):
        """Top-k scores per row, 0 elsewhere (seen items 0): dense as the seed, or CSR with
        exactly k explicit entries per row with ``sparse=True``."""
        x = sp.csr_matrix(x, dtype=np.float32)
        x.sort_indices()
        values, top = self.model.rank(x, k, mask_seen=remove_seen)
        values = np.where(np.isneginf(values), np.float32(0), values)
        if sparse:
            return top_to_csr(top, values, x.shape[1])
        return top_to_dense(top, values, x.shape[1])

    def validation_ndcg(self) -> np.ndarray:
        """Per-user NDCG@k of the validation users (NaN for users without held-out items)."""
        _, top = self.model.rank(self.val_tr, self.k, mask_seen=True)
        return ndcg_from_top(top, self.val_te)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        per_user = self.validation_ndcg()
        ndcg = float(np.nanmean(per_user)) if np.isfinite(per_user).any() else math.nan
        if logs is not None:
            logs["ndcg"] = ndcg
        if ndcg > self.best_ndcg:
            self.best_ndcg, self.best_epoch = ndcg, epoch
            self.best_weights = self.model.get_weights()
            if self.save_path is not None:
                save_network(self.model, self.save_path)
        self._data.append(ndcg)

    def get_data(self) -> list[float]:
        """Validation NDCG@k per epoch."""
        return self._data


class AnnealingCallback(keras.callbacks.Callback):
    """KL annealing: after every batch beta = min(update_count / total_anneal_steps, cap).

    Args:
        beta: the non-trainable variable the network's ``train_step`` reads.
        anneal_cap: largest beta reached.
        total_anneal_steps: batches over which beta would grow from 0 to 1.
    """

    def __init__(self, beta, anneal_cap: float, total_anneal_steps: float) -> None:
        super().__init__()
        self.beta = beta
        self.anneal_cap = anneal_cap
        self.total_anneal_steps = total_anneal_steps
        self.update_count = 0
        self._beta: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._beta = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.update_count += 1
        self.beta.assign(beta_at(self.update_count, self.anneal_cap, self.total_anneal_steps))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._beta.append(float(np.asarray(self.beta)))

    def get_data(self) -> list[float]:
        """Beta at the end of every epoch."""
        return self._beta


class DivergenceGuard(keras.callbacks.Callback):
    """Raises TrainingDivergedError at the first non-finite batch loss or epoch loss."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.last_finite: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._check((logs or {}).get("loss", 0.0), f"training loss of batch {batch}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self._check(logs.get("loss", 0.0), "training loss")
        self._check(logs.get("val_loss", 0.0), "validation loss", allow_nan=True)
        self.last_finite = logs.get("loss", self.last_finite)

    def _check(self, value: float, what: str, allow_nan: bool = False) -> None:
        if math.isfinite(value) or (allow_nan and math.isnan(value)):
            return
        last = "none (it diverged in the first epoch)"
        if self.last_finite is not None:
            last = f"{self.last_finite:.6g} (mean of epoch {self.epoch - 1})"
        lr = float(np.asarray(self.model.optimizer.learning_rate)) if self.model else math.nan
        raise TrainingDivergedError(
            f"training diverged in epoch {self.epoch}: {what} is {value}; last finite epoch "
            f"loss {last}. Lower learning_rate (was {lr:g}) or check the input for extreme values"
        )


class EpochHook(keras.callbacks.Callback):
    """Calls ``fn(epoch, logs)`` with the contract's five keys; True stops training.

    Exceptions raised by ``fn`` (e.g. ``optuna.TrialPruned``) propagate unchanged.
    """

    def __init__(self, fn: EpochCallback) -> None:
        super().__init__()
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        values = {key: float(logs.get(key, math.nan)) for key in HISTORY_KEYS}
        if self.fn(epoch, values) is True:
            self.model.stop_training = True
