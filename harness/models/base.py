"""The one training path shared by StandardVAE and MultVAE.

``VAERecommender`` keeps the seed's public API (constructor, ``fit``, ``recommend_k_items``,
``get_optimal_beta``, ``display_metrics``, ``ndcg_per_epoch``) and runs a compiled
``train_step`` per sparse batch while driving Keras callbacks the way ``model.fit`` would.
A custom loop rather than ``model.fit``: batches stay sparse end to end and the per-batch
Python overhead is one compiled call plus the callbacks.
"""

from __future__ import annotations

import inspect
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from harness.models.batching import SparseBatches, top_to_csr, top_to_dense
from harness.models.callbacks import (
    HISTORY_KEYS,
    DivergenceGuard,
    EarlyStopping,
    EpochCallback,
    EpochHook,
    LossHistory,
    Metrics,
    seed_total_anneal_steps,
    wants_batch_events,
)
from harness.models.persistence import FORMAT, load_as, save_network
from harness.models.vae import VAENetwork
from harness.models.validation import (
    as_click_matrix,
    check_fit_inputs,
    check_k,
    check_save_path,
    check_schedule,
    check_stopping,
    check_vae_param,
    check_vae_params,
)

# Clicks per compiled training call when no callback listens to batch events: all of
# ml-100k's epoch in one call; a few calls per epoch at the ML-20M shape (memory stays small)
EPOCH_CALL_MAX_CLICKS = 1 << 21

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
        save_path: file receiving the best weights whenever validation NDCG improves (the
            final weights after a fit without validation users), in a format Keras reads by
            its suffix: ".weights.h5" (weights), ".keras" (whole model), ".h5"/".hdf5"
            (legacy whole-model HDF5, as the seed's examples name it). When set,
            ``recommend_k_items`` loads the weights from it, as the seed does.
        learning_rate: Adam's initial learning rate.
        total_anneal_steps: None = the seed formula
            floor(batches_per_epoch * (n_epochs - int(0.2 * n_epochs)) / anneal_cap);
            a number = that many batches (Liang et al. use 200000). The attribute of the
            same name holds the computed value, as in the seed.
        n_hidden_layers: tanh layers in encoder and decoder each (seed: 1).
        l2_penalty: weight of the squared-kernel penalty added to the loss (seed: 0).
        lr_schedule: "plateau" (the seed: Keras ``ReduceLROnPlateau`` monitoring
            ``val_loss``) or "constant" (Adam at ``learning_rate`` throughout, as Liang et
            al.). The plateau watches the validation negative ELBO at the current beta, the
            only validation signal the seed's ``model.fit`` had. With KL annealing that loss
            grows with beta even while the model improves, so the plateau reads "no
            progress" and cuts the rate: with Liang's settings on ml-100k
            (``benchmarks/bench_mult_vae_parity.py``) Mult-VAE's rate hit the 1e-4 floor by
            epoch 20-25, its best epoch drifted to 90-99 of 100 and its test NDCG@100 was
            0.378 against 0.400 with a constant rate (3 seeds). It only runs when there are
            validation users (without them there is nothing to monitor).
        plateau_factor, plateau_patience, plateau_min_lr: ``ReduceLROnPlateau``'s factor,
            patience (epochs) and min_lr (seed: 0.2, 1, 1e-4); unused with "constant".
        adam_epsilon: Adam's epsilon (Keras default 1e-7; Liang's TF1 AdamOptimizer 1e-8).
        patience: early stopping: stop after this many epochs without a better validation
            NDCG (the best epoch's weights are restored either way); None = train all
            ``n_epochs``, which are then the maximum. Needs validation users.
        anneal_epochs: the epoch (possibly fractional) at which annealed beta reaches
            ``anneal_cap``: total_anneal_steps = floor(batches_per_epoch * anneal_epochs /
            anneal_cap), independent of ``n_epochs``, so stopping early or raising the
            maximum leaves beta's path unchanged. None = the seed formula below;
            ``total_anneal_steps`` wins over both.

    Attributes (the seed's, same meaning): ``model`` (the Keras network), ``train_loss``,
    ``val_loss``, ``val_ndcg``, ``ls_beta`` (per epoch of the last fit),
    ``number_of_batches`` (batches per epoch: ceil(n_users / batch_size) here, since the
    last partial batch is kept), ``total_anneal_steps`` (the computed value).
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
        lr_schedule: str = "plateau",
        plateau_factor: float = 0.2,
        plateau_patience: int = 1,
        plateau_min_lr: float = 1e-4,
        adam_epsilon: float = 1e-7,
        patience: int | None = None,
        anneal_epochs: float | None = None,
    ) -> None:
        check_vae_params(
            n_users=n_users, original_dim=original_dim, intermediate_dim=intermediate_dim,
            latent_dim=latent_dim, n_epochs=n_epochs, batch_size=batch_size, k=k,
            drop_encoder=drop_encoder, drop_decoder=drop_decoder, beta=beta,
            annealing=annealing, anneal_cap=anneal_cap, total_anneal_steps=total_anneal_steps,
            learning_rate=learning_rate, n_hidden_layers=n_hidden_layers, l2_penalty=l2_penalty,
        )  # fmt: skip
        check_schedule(lr_schedule, plateau_factor, plateau_patience, plateau_min_lr, adam_epsilon)
        check_stopping(patience, anneal_epochs)
        self.n_users, self.original_dim = n_users, original_dim
        self.intermediate_dim, self.latent_dim = intermediate_dim, latent_dim
        self.n_epochs, self.batch_size, self.k, self.verbose = n_epochs, batch_size, k, verbose
        self.drop_encoder, self.drop_decoder = drop_encoder, drop_decoder
        self.beta, self.annealing, self.anneal_cap = beta, annealing, anneal_cap
        self.seed, self.save_path = seed, save_path
        self.learning_rate = learning_rate
        self.n_hidden_layers, self.l2_penalty = n_hidden_layers, l2_penalty
        self.lr_schedule, self.plateau_factor = lr_schedule, plateau_factor
        self.plateau_patience, self.plateau_min_lr = plateau_patience, plateau_min_lr
        self.adam_epsilon = adam_epsilon
        self.patience, self.anneal_epochs = patience, anneal_epochs
        self._total_anneal_steps_arg = total_anneal_steps
        self.number_of_batches = -(-n_users // batch_size)
        self.total_anneal_steps = self._anneal_steps()
        if seed is not None:
            keras.utils.set_random_seed(seed)
            tf.config.experimental.enable_op_determinism()
        self.beta_variable = tf.Variable(0.0 if annealing else beta, trainable=False)
        self.network = self._build_network()
        self.network.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate, epsilon=adam_epsilon)
        )
        self.network.optimizer.build(self.network.trainable_variables)
        self._history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        self.best_epoch = 0
        self.best_ndcg = math.nan

    @classmethod
    def check_param(cls, name: str, value: Any, context: dict[str, Any]) -> None:
        """Check one hyperparameter before any data loads (``validation.check_vae_param``;
        ``context``: the other configured parameters)."""
        check_vae_param(name, value, context)

    @property
    def model(self) -> VAENetwork:
        """The Keras network (the seed's ``model`` attribute)."""
        return self.network

    @property
    def total_anneal_steps_(self) -> float:
        """The annealing length in batches used by ``fit`` (same as ``total_anneal_steps``)."""
        return self.total_anneal_steps

    @property
    def train_loss(self) -> list[float]:
        """Training loss per epoch of the last fit (seed attribute)."""
        return list(self._history["loss"])

    @property
    def val_loss(self) -> list[float]:
        """Validation loss per epoch of the last fit (seed attribute)."""
        return list(self._history["val_loss"])

    @property
    def val_ndcg(self) -> list[float]:
        """Validation NDCG@k per epoch of the last fit (seed attribute)."""
        return list(self._history["ndcg"])

    @property
    def ls_beta(self) -> list[float]:
        """Beta at the end of every epoch of the last fit (seed attribute)."""
        return list(self._history["beta"])

    def _anneal_steps(self) -> float:
        if self._total_anneal_steps_arg is not None:
            return float(self._total_anneal_steps_arg)
        if self.anneal_epochs is not None:  # independent of n_epochs: early stopping and a
            # larger maximum leave beta's path unchanged
            return max(1.0, (self.number_of_batches * self.anneal_epochs) // self.anneal_cap)
        return seed_total_anneal_steps(self.number_of_batches, self.n_epochs, self.anneal_cap)

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (other than n_users/original_dim) as they stand now."""
        names = list(inspect.signature(type(self).__init__).parameters)[3:]  # self, n_users,
        params = {name: getattr(self, name) for name in names}  # original_dim
        params["total_anneal_steps"] = self._total_anneal_steps_arg
        # plain Python values (a sweep may pass numpy scalars): the record is JSON
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}

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
        callbacks: list[keras.callbacks.Callback] | None = None,
    ) -> VAERecommender:
        """Train for up to ``n_epochs``, then restore the weights of the best validation epoch.

        Args:
            x_train: training users' clicks (numpy or scipy sparse, users x items).
            x_valid: validation users' full rows, for the validation loss (which drives
                the "plateau" schedule); defaults to x_val_tr + x_val_te.
            x_val_tr: validation users' fold-in clicks (ranked without them).
            x_val_te: validation users' held-out clicks (the truth of NDCG@k).
            mapper: ignored (seed API parity).
            epoch_callback: ``fn(epoch, logs)`` after every epoch with keys ndcg, loss,
                val_loss, beta, lr; returning True stops; its exceptions propagate.
            callbacks: standard Keras callbacks, run after the internal ones (divergence
                check, annealing, NDCG, history, plateau) and before ``epoch_callback``;
                their ``model`` is the network, epoch logs hold loss, val_loss, beta, lr
                and ndcg, and setting ``model.stop_training`` stops.

        Without validation users NDCG is NaN, the learning rate stays fixed and the final
        weights are kept (and written to ``save_path`` when set). A second ``fit`` continues from the current weights (as the seed).
        The history and best weights are recorded even when an exception ends training.

        Raises:
            ValueError: bad inputs (before any training).
            TrainingDivergedError: a NaN/inf loss (at the first such batch).
        """
        check_save_path(self.save_path)
        extra = list(callbacks or [])
        for cb in extra:
            if not isinstance(cb, keras.callbacks.Callback):
                raise ValueError(
                    f"callbacks must be keras.callbacks.Callback instances, got "
                    f"{type(cb).__name__}: use epoch_callback=fn for a plain function"
                )
        data = check_fit_inputs(
            x_train, x_valid, x_val_tr, x_val_te, n_items=self.original_dim, n_users=self.n_users
        )
        batches = SparseBatches(data.train, self.batch_size, self.seed)
        self.number_of_batches = len(batches)
        self.total_anneal_steps = self._anneal_steps()  # n_epochs may have changed since
        self.network.recommender = self._record(with_history=False)
        history = LossHistory()
        metrics = None
        if data.val_tr is not None:
            metrics = Metrics(
                self.network, data.val_tr, data.val_te, mapper, self.k, self.save_path
            )
        cbs = self._callbacks(metrics, history, data.valid is not None) + extra
        if epoch_callback is not None:
            cbs.append(EpochHook(epoch_callback))  # last: it sees every other result
        try:
            self._run_epochs(batches, data.valid, cbs)
        finally:
            self._finish(history, metrics)
        return self

    def _callbacks(
        self, metrics: Metrics | None, history: LossHistory, has_valid: bool
    ) -> list[keras.callbacks.Callback]:
        """The seed's callbacks in run order: divergence check first (before anything
        records a NaN), NDCG, history, then the plateau schedule if chosen. The seed's
        ``AnnealingCallback`` runs inside the compiled training call (``_run_epochs``)."""
        callbacks: list[keras.callbacks.Callback] = [DivergenceGuard()]
        if self.annealing:
            self.beta_variable.assign(0.0)
        if metrics is not None:
            callbacks.append(metrics)
            if self.patience is not None:
                callbacks.append(EarlyStopping(metrics, self.patience))
        callbacks.append(history)
        # without a validation loss the plateau schedule would misfire on NaN
        if self.lr_schedule == "plateau" and has_valid:
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_loss",
                    factor=self.plateau_factor,
                    patience=self.plateau_patience,
                    min_lr=self.plateau_min_lr,
                )
            )
        return callbacks

    def _run_epochs(self, batches: SparseBatches, valid, callbacks: list) -> None:
        """The epochs: training batches through ``network.train_batches`` (a run of batches
        per compiled call, annealing in-graph), then validation and the epoch callbacks.

        Batch events cost a call per batch, so they are only produced when something
        listens: the progress bar (verbose > 0) or a callback with a batch hook. Otherwise
        one call trains up to ``EPOCH_CALL_MAX_CLICKS`` clicks' worth of batches (all of
        ml-100k's) and the batch losses are checked for divergence afterwards; either way
        the same graph runs the same steps in the same order, so the results are the same.
        """
        network = self.network
        cbs = keras.callbacks.CallbackList(
            callbacks, add_progbar=self.verbose > 0, model=network, verbose=self.verbose,
            epochs=self.n_epochs, steps=len(batches),
        )  # fmt: skip
        guard = next(cb for cb in callbacks if isinstance(cb, DivergenceGuard))
        batch_events = self.verbose > 0 or any(
            wants_batch_events(cb) for cb in callbacks if cb is not guard
        )  # the guard's batch check runs either way
        max_clicks = 0 if batch_events else EPOCH_CALL_MAX_CLICKS
        schedule = (
            tf.constant(self.annealing),
            tf.constant(float(self.anneal_cap), tf.float64),
            tf.constant(float(self.total_anneal_steps), tf.float64),
        )
        n_users, steps_done = batches.x.shape[0], 0
        network.stop_training = False
        cbs.on_train_begin()
        for epoch in range(self.n_epochs):
            cbs.on_epoch_begin(epoch)
            step = 0
            for train_batches in self._epoch_passes():
                total = 0.0  # the epoch's loss is its last pass's
                for group in batches.epoch_groups(max_clicks):
                    sums = train_batches(*group, np.int64(steps_done), *schedule).numpy()
                    steps_done += len(sums)
                    # fewer sums than batches only after a non-finite one: the guard raises
                    n_rows_per_batch = np.diff(group[3]).tolist()
                    for batch_sum, n_rows in zip(sums.tolist(), n_rows_per_batch, strict=False):
                        total += batch_sum
                        logs = {"loss": batch_sum / n_rows}
                        if batch_events:
                            cbs.on_train_batch_end(step, logs)  # the guard is the first
                        else:
                            guard.on_train_batch_end(step, logs)
                        step += 1
            logs = {
                "loss": total / n_users,
                "val_loss": network.loss_sum(valid) / valid.shape[0] if valid is not None
                else math.nan,
                "beta": float(self.beta_variable.numpy()),
                "lr": float(np.asarray(network.optimizer.learning_rate)),
            }  # fmt: skip
            cbs.on_epoch_end(epoch, logs)
            if network.stop_training:
                break
        cbs.on_train_end()

    def _epoch_passes(self):
        """The compiled batch-group trainers of one epoch, one per pass over the training
        users (each pass reshuffles). One pass of ``network.train_batches`` here; RecVAE
        alternates encoder and decoder passes."""
        yield self.network.train_batches

    def _finish(self, history: LossHistory, metrics: Metrics | None) -> None:
        self._history = {key: list(values) for key, values in history.per_epoch.items()}
        if metrics is not None and metrics.best_weights is not None:
            self.network.set_weights(metrics.best_weights)
            self.best_epoch, self.best_ndcg = metrics.best_epoch, metrics.best_ndcg
        else:
            self.best_epoch = max(len(self._history["ndcg"]) - 1, 0)
            self.best_ndcg = math.nan
            if self.save_path is not None and self._history["loss"]:
                save_network(self.network, self.save_path)

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
        """Loss (train, val) and NDCG@k per epoch, drawn on a new pyplot figure (which
        becomes the current one, so ``plt.show()``/``plt.savefig`` work, as in the seed);
        returns that Figure."""
        import matplotlib.pyplot as plt

        from harness.models.plots import plot_training_history

        return plot_training_history(self.history(), k=self.k, fig=plt.figure(figsize=(12, 4.5)))

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load weights written through ``save_path`` or ``save`` (".weights.h5", ".keras",
        ".h5"/".hdf5"; any other name is read as ".weights.h5" through a temporary copy).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file holds another network shape (e.g. another item count).
        """
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"no weights file at {path}: train with save_path={str(path)!r}"
            )
        try:
            if str(path).endswith((".weights.h5", ".keras", ".h5", ".hdf5")):
                self.network.load_weights(path)
                return
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / "model.weights.h5"
                shutil.copyfile(path, copy)
                self.network.load_weights(copy)
        except (ValueError, KeyError) as exc:
            raise ValueError(
                f"{path} does not hold weights of this {type(self).__name__} ({self.original_dim}"
                f" items, {self.intermediate_dim}-{self.latent_dim}, {self.n_hidden_layers} "
                f"hidden layer(s)): build the model with the arguments it was trained with "
                f"({exc})"
            ) from exc

    # --- persistence --------------------------------------------------------------------
    def _record(self, *, with_history: bool = True) -> dict[str, Any]:
        record = {
            "format": FORMAT,
            "class": type(self).__name__,
            "n_items": self.original_dim,
            "n_users": self.n_users,
            "params": self.get_params(),
        }
        if with_history:
            record.update(
                history=self.history(), best_epoch=int(self.best_epoch),
                best_ndcg=None if math.isnan(self.best_ndcg) else float(self.best_ndcg),
            )  # fmt: skip
        return record

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model (weights, constructor arguments, history) to one ``.keras`` file,
        which ``harness.models.load_model`` and ``keras.models.load_model`` read.

        Raises:
            ValueError: the path does not end in ".keras", or its folder is missing or
                not writable.
        """
        check_save_path(path, (".keras",))
        self.network.recommender = self._record()
        save_network(self.network, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VAERecommender:
        """Load a file written by ``save``; ValueError if it holds another model class."""
        return load_as(path, cls, expected=cls)

    @classmethod
    def _from_record(cls, path: Path, record: dict[str, Any]) -> VAERecommender:
        params = {**record["params"], "save_path": None}  # never read the trainer's file
        model = cls(record["n_users"], record["n_items"], **params)
        model.network.load_weights(path)
        model._history = {key: list(v) for key, v in (record.get("history") or {}).items()}
        model._history = {key: model._history.get(key, []) for key in HISTORY_KEYS}
        model.best_epoch = int(record.get("best_epoch") or 0)
        best = record.get("best_ndcg")
        model.best_ndcg = math.nan if best is None else float(best)
        return model

    # --- scoring ------------------------------------------------------------------------
    def score(self, x) -> np.ndarray:
        """Dense float32 scores (users x items) from the posterior mean; no masking.

        StandardVAE: softmax probabilities (sigmoid variant: logits); MultVAE: logits.
        """
        return self.network.predict_scores(as_click_matrix(x, "x", self.original_dim))

    def recommend_k_items(self, x, k: int, remove_seen: bool = True, *, sparse: bool = False):
        """Each row's top-k scores, as the seed: a dense float32 array of ``x``'s shape
        holding the k best scores of each row and 0 elsewhere.

        With ``remove_seen`` the non-zeros of ``x`` are never recommended: they are 0, also
        when a row has fewer than k unseen items (its extra places stay 0, as in the seed).
        A Mult-VAE logit can be negative: it is still a (non-zero) recommended entry.
        ``sparse=True`` returns the same as a CSR matrix with exactly k explicit entries per
        row (explicit 0 for the seen filler), which is what large inputs want.
        When ``save_path`` is set the weights are first loaded from it, as the seed does.

        Raises:
            FileNotFoundError: ``save_path`` is set but holds no file yet (call ``fit``).
        """
        check_k(k, self.original_dim)
        x = as_click_matrix(x, "x", self.original_dim)
        if self.save_path is not None:
            if not Path(self.save_path).is_file():
                raise FileNotFoundError(
                    f"save_path={self.save_path!r} holds no weights yet: call fit first (it "
                    "writes the best weights there), or set save_path=None to use the "
                    "weights in memory"
                )
            self.load_weights(self.save_path)
        values, top = self.network.rank(x, k, mask_seen=remove_seen)
        values = np.where(np.isneginf(values), np.float32(0), values)
        if sparse:
            return top_to_csr(top, values, self.original_dim)
        return top_to_dense(top, values, self.original_dim)
