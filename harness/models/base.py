"""The one training path shared by StandardVAE and MultVAE.

``VAERecommender`` keeps the seed's public API (constructor, ``fit``, ``recommend_k_items``,
``get_optimal_beta``, ``display_metrics``, ``ndcg_per_epoch``) and runs a compiled
``train_step`` per sparse batch while driving Keras callbacks the way ``model.fit`` would.
A custom loop rather than ``model.fit``: batches stay sparse end to end and the per-batch
Python overhead is one compiled call plus the callbacks.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from harness.models.batching import SparseBatches, top_to_csr
from harness.models.callbacks import (
    HISTORY_KEYS,
    AnnealingCallback,
    DivergenceGuard,
    EpochCallback,
    EpochHook,
    LossHistory,
    Metrics,
    seed_total_anneal_steps,
)
from harness.models.vae import VAENetwork
from harness.models.validation import as_click_matrix, check_fit_inputs, check_k, check_vae_params

# Compiling Adam with XLA costs ~0.4 s once and saves ~1.8 ms per step per million weights
# (measured on 2 CPU cores), so it pays off past about 2.5e8 weight-steps.
XLA_MIN_WEIGHT_STEPS = 2.5e8


class VAERecommender:
    """Base class: subclasses only choose the network (likelihood and input transform).

    Args:
        n_users: training users (rows of x_train); sets the batches per epoch.
        original_dim: items (columns).
        intermediate_dim: width of the tanh hidden layers.
        latent_dim: width of the latent code.
        n_epochs: maximum epochs (an epoch callback may stop earlier).
        batch_size: users per batch; the last partial batch is kept.
        k: cut-off of the validation NDCG@k.
        verbose: 0 silent, 1 a Keras progress bar.
        drop_encoder: dropout rate on the input, in [0, 1).
        drop_decoder: dropout rate after the decoder's hidden layer, in [0, 1).
        beta: constant KL weight when ``annealing`` is False.
        annealing: grow beta per batch as min(step / total_anneal_steps, anneal_cap).
        anneal_cap: largest annealed beta (> 0 when annealing).
        seed: seeds weights, dropout, sampling and batch order and turns on TensorFlow's
            op determinism (a process-wide switch); None = nondeterministic.
        save_path: file receiving the best weights (Keras HDF5 format) whenever validation
            NDCG improves.
        learning_rate: Adam's initial learning rate.
        total_anneal_steps: None = the seed formula
            floor(batches_per_epoch * (n_epochs - int(0.2 * n_epochs)) / anneal_cap);
            a number = that many batches (Liang et al. use 200000).
        n_hidden_layers: tanh layers in encoder and decoder each (seed: 1).
        l2_penalty: weight of the squared-kernel penalty added to the loss (seed: 0).
    """

    def __init__(
        self,
        n_users: int,
        original_dim: int,
        intermediate_dim: int = 200,
        latent_dim: int = 70,
        n_epochs: int = 400,
        batch_size: int = 100,
        k: int = 100,
        verbose: int = 1,
        drop_encoder: float = 0.5,
        drop_decoder: float = 0.5,
        beta: float = 1.0,
        annealing: bool = False,
        anneal_cap: float = 1.0,
        seed: int | None = None,
        save_path: str | None = None,
        *,
        learning_rate: float = 1e-3,
        total_anneal_steps: float | None = None,
        n_hidden_layers: int = 1,
        l2_penalty: float = 0.0,
    ) -> None:
        check_vae_params(
            n_users=n_users, original_dim=original_dim, intermediate_dim=intermediate_dim,
            latent_dim=latent_dim, n_epochs=n_epochs, batch_size=batch_size, k=k,
            drop_encoder=drop_encoder, drop_decoder=drop_decoder, beta=beta,
            annealing=annealing, anneal_cap=anneal_cap, total_anneal_steps=total_anneal_steps,
            learning_rate=learning_rate, n_hidden_layers=n_hidden_layers, l2_penalty=l2_penalty,
        )  # fmt: skip
        self.n_users, self.original_dim = n_users, original_dim
        self.intermediate_dim, self.latent_dim = intermediate_dim, latent_dim
        self.n_epochs, self.batch_size, self.k, self.verbose = n_epochs, batch_size, k, verbose
        self.drop_encoder, self.drop_decoder = drop_encoder, drop_decoder
        self.beta, self.annealing, self.anneal_cap = beta, annealing, anneal_cap
        self.seed, self.save_path = seed, save_path
        self.learning_rate, self.total_anneal_steps = learning_rate, total_anneal_steps
        self.n_hidden_layers, self.l2_penalty = n_hidden_layers, l2_penalty
        if seed is not None:
            keras.utils.set_random_seed(seed)
            tf.config.experimental.enable_op_determinism()
        self.beta_variable = tf.Variable(0.0 if annealing else beta, trainable=False)
        self.network = self._build_network()
        self.network.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate))
        self.network.build()
        self.network.optimizer.build(self.network.trainable_variables)
        self._history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        self.best_epoch = 0
        self.best_ndcg = math.nan

    def _build_network(self) -> VAENetwork:
        raise NotImplementedError

    def _network_kwargs(self) -> dict:
        weights = self.original_dim * self.intermediate_dim * 2
        steps = -(-self.n_users // self.batch_size) * self.n_epochs
        return dict(
            xla_optimizer=weights * steps >= XLA_MIN_WEIGHT_STEPS,
            original_dim=self.original_dim, intermediate_dim=self.intermediate_dim,
            latent_dim=self.latent_dim, beta=self.beta_variable,
            n_hidden_layers=self.n_hidden_layers, drop_encoder=self.drop_encoder,
            drop_decoder=self.drop_decoder, l2_penalty=self.l2_penalty, seed=self.seed,
        )  # fmt: skip

    # --- training -------------------------------------------------------------------------
    def fit(
        self,
        x_train,
        x_valid=None,
        x_val_tr=None,
        x_val_te=None,
        mapper=None,
        *,
        epoch_callback: EpochCallback | None = None,
    ) -> VAERecommender:
        """Train for up to ``n_epochs``, then restore the weights of the best validation epoch.

        Args:
            x_train: training users' clicks (numpy or scipy sparse, users x items).
            x_valid: validation users' full rows, for the validation loss that drives
                ReduceLROnPlateau; defaults to x_val_tr + x_val_te.
            x_val_tr: validation users' fold-in clicks (ranked without them).
            x_val_te: validation users' held-out clicks (the truth of NDCG@k).
            mapper: ignored (seed API parity).
            epoch_callback: ``fn(epoch, logs)`` after every epoch with keys ndcg, loss,
                val_loss, beta, lr; returning True stops; its exceptions propagate.

        Without validation users NDCG is NaN, the learning rate stays fixed and the final
        weights are kept. A second ``fit`` continues from the current weights (as the seed).
        The history and best weights are recorded even when an exception ends training.

        Raises:
            ValueError: bad inputs (before any training).
            TrainingDivergedError: a NaN/inf loss (at the first such batch).
        """
        data = check_fit_inputs(
            x_train, x_valid, x_val_tr, x_val_te, n_items=self.original_dim, n_users=self.n_users
        )
        batches = SparseBatches(data.train, self.batch_size, self.seed)
        history = LossHistory()
        metrics = None
        if data.val_tr is not None:
            metrics = Metrics(
                self.network, data.val_tr, data.val_te, mapper, self.k, self.save_path
            )
        callbacks = self._callbacks(len(batches), metrics, history, data.valid is not None)
        if epoch_callback is not None:
            callbacks.append(EpochHook(epoch_callback))  # last: it sees every other result
        try:
            self._run_epochs(batches, data.valid, callbacks)
        finally:
            self._finish(history, metrics)
        return self

    def _callbacks(
        self, n_batches: int, metrics: Metrics | None, history: LossHistory, has_valid: bool
    ) -> list[keras.callbacks.Callback]:
        """The seed's callbacks in run order: divergence check first (before anything
        records a NaN), annealing, NDCG, history, then the plateau schedule."""
        callbacks: list[keras.callbacks.Callback] = [DivergenceGuard()]
        if self.annealing:
            self.beta_variable.assign(0.0)
            self.total_anneal_steps_ = self.total_anneal_steps or seed_total_anneal_steps(
                n_batches, self.n_epochs, self.anneal_cap
            )
            callbacks.append(
                AnnealingCallback(self.beta_variable, self.anneal_cap, self.total_anneal_steps_)
            )
        if metrics is not None:
            callbacks.append(metrics)
        callbacks.append(history)
        if has_valid:  # without a validation loss the plateau schedule would misfire on NaN
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_loss", factor=0.2, patience=1, min_lr=1e-4
                )
            )
        return callbacks

    def _run_epochs(self, batches: SparseBatches, valid, callbacks: list) -> None:
        network = self.network
        cbs = keras.callbacks.CallbackList(
            callbacks, add_progbar=self.verbose > 0, model=network, verbose=self.verbose,
            epochs=self.n_epochs, steps=len(batches),
        )  # fmt: skip
        network.stop_training = False
        cbs.on_train_begin()
        for epoch in range(self.n_epochs):
            cbs.on_epoch_begin(epoch)
            total = 0.0
            for step, parts in enumerate(batches.epoch()):
                batch_sum = float(network.train_components(*parts))
                total += batch_sum
                cbs.on_train_batch_end(step, {"loss": batch_sum / parts[3]})
            logs = {
                "loss": total / batches.x.shape[0],
                "val_loss": network.loss_sum(valid) / valid.shape[0] if valid is not None
                else math.nan,
                "beta": float(self.beta_variable.numpy()),
                "lr": float(np.asarray(network.optimizer.learning_rate)),
            }  # fmt: skip
            cbs.on_epoch_end(epoch, logs)
            if network.stop_training:
                break
        cbs.on_train_end()

    def _finish(self, history: LossHistory, metrics: Metrics | None) -> None:
        self._history = {key: list(values) for key, values in history.per_epoch.items()}
        if metrics is not None and metrics.best_weights is not None:
            self.network.set_weights(metrics.best_weights)
            self.best_epoch, self.best_ndcg = metrics.best_epoch, metrics.best_ndcg
        else:
            self.best_epoch = max(len(self._history["ndcg"]) - 1, 0)
            self.best_ndcg = math.nan

    # --- results ------------------------------------------------------------------------
    def history(self) -> dict[str, list[float]]:
        """Per-epoch "ndcg", "loss", "val_loss", "beta", "lr" of the last fit (copies)."""
        return {key: list(values) for key, values in self._history.items()}

    def ndcg_per_epoch(self) -> list[float]:
        """Validation NDCG@k per epoch of the last fit."""
        return list(self._history["ndcg"])

    def get_optimal_beta(self) -> float:
        """Beta at the end of the best-NDCG epoch; the constant beta before any fit."""
        betas = self._history["beta"]
        if not betas:
            return float(self.beta_variable.numpy())
        return betas[min(self.best_epoch, len(betas) - 1)]

    def display_metrics(self):
        """Figure with loss (train, val) per epoch and NDCG@k per epoch; nothing is shown."""
        from harness.models.plots import plot_training_history

        return plot_training_history(self.history(), k=self.k)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load weights written through ``save_path`` (any file name; Keras itself insists on
        a ".weights.h5" suffix, so other names are read through a temporary copy)."""
        if str(path).endswith(".weights.h5"):
            self.network.load_weights(path)
            return
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "model.weights.h5"
            shutil.copyfile(path, copy)
            self.network.load_weights(copy)

    # --- scoring ------------------------------------------------------------------------
    def score(self, x) -> np.ndarray:
        """Dense float32 scores (users x items) from the posterior mean; no masking.

        StandardVAE: softmax probabilities (sigmoid variant: logits); MultVAE: logits.
        """
        return self.network.predict_scores(as_click_matrix(x, "x", self.original_dim))

    def recommend_k_items(self, x, k: int, remove_seen: bool = True) -> sp.csr_matrix:
        """Each row's top-k scores as a CSR matrix with exactly k explicit entries per row.

        Seen items (non-zeros of ``x``) get -inf when ``remove_seen``, so they are ranked
        only when a row has fewer than k unseen items; those entries hold -inf.
        """
        check_k(k, self.original_dim)
        x = as_click_matrix(x, "x", self.original_dim)
        values, top = self.network.rank(x, k, mask_seen=remove_seen)
        return top_to_csr(top, values, self.original_dim)
