"""The shared VAE network: one Keras model, one ``train_step``, three likelihoods.

Every batch is a ``tf.SparseTensor`` of clicks. The first encoder layer is a
sparse-dense matmul and the reconstruction losses gather the decoder outputs at
the clicked items only, so no users x items matrix is ever densified; the one
dense piece of work per batch is the decoder's output layer (batch x items),
which is what the model really costs.

Subclasses override exactly two things: ``transform_input`` (Mult-VAE
L2-normalises) and ``reconstruction_loss`` (the likelihood); ``output_scores``
turns decoder logits into the ranking scores that the wrapper returns.
"""

from __future__ import annotations

from functools import partial

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from keras import ops

from harness.compat.keras import adam_slots, has_schedule
from harness.models.batching import chunks
from harness.models.sparse_ops import sparse_matmul, to_sparse_tensor

# rows scored at once when ranking: 1024 x 20k items x 4 B = 80 MB per score buffer
EVAL_CHUNK_ROWS = 1024
_COMPONENTS = [
    tf.TensorSpec([None], tf.int32),
    tf.TensorSpec([None], tf.int32),
    tf.TensorSpec([None], tf.float32),
    tf.TensorSpec([], tf.int32),
]
_BATCH_GROUP = [
    tf.TensorSpec([None], tf.int32),  # row within its batch
    tf.TensorSpec([None], tf.int32),  # item
    tf.TensorSpec([None], tf.float32),  # value
    tf.TensorSpec([None], tf.int32),  # row offsets of the batches
    tf.TensorSpec([None], tf.int32),  # entry offsets of the batches
    tf.TensorSpec([], tf.int64),  # batches trained before this call (annealing step)
    tf.TensorSpec([], tf.bool),  # anneal beta after every batch
    tf.TensorSpec([], tf.float64),  # anneal_cap
    tf.TensorSpec([], tf.float64),  # total_anneal_steps
]


class Sampling(keras.layers.Layer):
    """Reparameterisation z = mu + exp(log_var / 2) * epsilon, epsilon ~ N(0, I).

    The layer owns its randomness (a seeded ``keras.random.SeedGenerator``) so a seeded
    model draws the same noise sequence on every run.
    """

    def __init__(self, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, mu, log_var, epsilon=None):
        """Sample z; a given ``epsilon`` (same shape as ``mu``) replaces the random draw."""
        if epsilon is None:
            epsilon = keras.random.normal(ops.shape(mu), seed=self.seed_generator)
        return mu + ops.exp(0.5 * log_var) * epsilon


def register(cls: type) -> type:
    """Class decorator: make a network loadable by ``keras.models.load_model``, from
    ``.keras`` files (registered as "harness>Name") and legacy ``.h5`` files (which look
    the class up by its bare name)."""
    cls = keras.saving.register_keras_serializable(package="harness")(cls)
    keras.saving.get_custom_objects()[cls.__name__] = cls
    return cls


def _plain_adam(optimizer) -> bool:
    """True for a Keras Adam without amsgrad, weight decay, clipping, EMA, loss scaling or
    gradient accumulation and with a plain (variable) learning rate: the optimizer the
    recommenders compile, whose update ``VAENetwork._apply_gradients`` writes out."""
    return (
        type(optimizer) is keras.optimizers.Adam
        and not optimizer.amsgrad
        and optimizer.weight_decay is None
        and optimizer.clipnorm is None
        and optimizer.clipvalue is None
        and optimizer.global_clipnorm is None
        and not optimizer.use_ema
        and optimizer.loss_scale_factor is None
        and optimizer.gradient_accumulation_steps is None
        and not has_schedule(optimizer)
    )


def _seeded(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed + offset


class VAENetwork(keras.Model):
    """Encoder -> Sampling -> decoder over a sparse click batch; loss = recon + beta * KL.

    Args:
        original_dim: number of items (input and output width).
        intermediate_dim: width of every tanh hidden layer.
        latent_dim: width of mu and log_var.
        beta: non-trainable variable holding the KL weight; ``train_step`` reads it every
            batch so annealing can change it without retracing.
        n_hidden_layers: tanh layers in the encoder (the decoder mirrors them).
        drop_encoder: dropout rate on the (transformed) input clicks.
        drop_decoder: dropout rate after the last decoder hidden layer.
        l2_penalty: weight of the sum of squared kernels added to the batch loss.
        seed: seeds weight initialisers, dropout and sampling; None = nondeterministic.
        xla_optimizer: compile the Adam update with XLA (pays off on large models).
        recommender: the wrapper's record (class, constructor arguments, history) stored in
            the config so that a saved ``.keras`` file rebuilds the whole recommender.

    Kernels are Glorot-uniform and biases zero (Keras' defaults, the seed's StandardVAE);
    a subclass sets ``BIAS_STDDEV`` for truncated-normal biases and ``JOINT_LATENT_FAN`` to
    give mu and log_var the Glorot range of one joint (hidden x 2*latent) layer, as Liang
    et al.'s code builds it. Every weight exists after ``__init__`` (``build`` runs there),
    so a file written by ``save`` loads without a sample input.
    """

    BIAS_STDDEV: float | None = None
    JOINT_LATENT_FAN = False
    # False: a denoising autoencoder (Mult-DAE): no log_var layer, no sampling, no KL; the
    # code layer gets LATENT_ACTIVATION (Liang et al.'s MultiDAE: tanh on every hidden layer)
    VARIATIONAL = True
    LATENT_ACTIVATION: str | None = None

    def __init__(
        self,
        original_dim: int,
        intermediate_dim: int,
        latent_dim: int,
        beta: tf.Variable | float = 1.0,
        *,
        n_hidden_layers: int = 1,
        drop_encoder: float = 0.5,
        drop_decoder: float = 0.5,
        l2_penalty: float = 0.0,
        seed: int | None = None,
        xla_optimizer: bool = False,
        recommender: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.original_dim, self.intermediate_dim = original_dim, intermediate_dim
        self.latent_dim, self.n_hidden_layers = latent_dim, n_hidden_layers
        if not isinstance(beta, tf.Variable):
            beta = tf.Variable(float(beta), trainable=False)
        self.beta = beta
        self.drop_encoder, self.drop_decoder = drop_encoder, drop_decoder
        self.l2_penalty, self.seed, self.xla_optimizer = l2_penalty, seed, xla_optimizer
        self.recommender = recommender

        def dense(
            units: int, offset: int, activation: str | None = None, fan_scale: float = 1.0
        ) -> keras.layers.Dense:
            kernel = keras.initializers.VarianceScaling(
                scale=fan_scale, mode="fan_avg", distribution="uniform", seed=_seeded(seed, offset)
            )  # scale 1: exactly GlorotUniform
            bias = "zeros"
            if self.BIAS_STDDEV is not None:
                bias = keras.initializers.TruncatedNormal(
                    stddev=self.BIAS_STDDEV, seed=_seeded(seed, offset + 1000)
                )
            return keras.layers.Dense(
                units, activation=activation, kernel_initializer=kernel, bias_initializer=bias
            )

        self._make_layers(dense)
        self._compile_steps(xla_optimizer)
        self.build()

    def _make_layers(self, dense) -> None:
        """Create the layers; ``dense(units, seed_offset, activation=None, fan_scale=1.0)``
        makes a Dense layer with this network's initialisers (subclasses may build others)."""
        self.encoder_layers = [
            dense(self.intermediate_dim, i, "tanh") for i in range(self.n_hidden_layers)
        ]
        # Liang et al.'s last encoder layer is one (hidden x 2*latent) matrix split into mu and
        # log_var: its Glorot range uses fan_out = 2 * self.latent_dim
        fan_scale = 1.0
        if self.JOINT_LATENT_FAN:
            fan_scale = (self.intermediate_dim + self.latent_dim) / (
                self.intermediate_dim + 2 * self.latent_dim
            )
        self.mu_layer = dense(self.latent_dim, 100, self.LATENT_ACTIVATION, fan_scale=fan_scale)
        self.log_var_layer = (
            dense(self.latent_dim, 101, fan_scale=fan_scale) if self.VARIATIONAL else None
        )
        self.sampling = Sampling(seed=_seeded(self.seed, 200))
        self.decoder_layers = [
            dense(self.intermediate_dim, 300 + i, "tanh") for i in range(self.n_hidden_layers)
        ]
        self.decoder_dropout = keras.layers.Dropout(self.drop_decoder, seed=_seeded(self.seed, 400))
        self.output_layer = dense(self.original_dim, 500)
        self.input_seed = keras.random.SeedGenerator(_seeded(self.seed, 600))

    def get_config(self) -> dict:
        """Constructor arguments (beta as its current value), for ``.keras`` files."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "original_dim": self.original_dim,
            "intermediate_dim": self.intermediate_dim,
            "latent_dim": self.latent_dim,
            "beta": float(self.beta.numpy()),
            "n_hidden_layers": self.n_hidden_layers,
            "drop_encoder": self.drop_encoder,
            "drop_decoder": self.drop_decoder,
            "l2_penalty": self.l2_penalty,
            "seed": self.seed,
            "xla_optimizer": self.xla_optimizer,
            "recommender": self.recommender,
        }

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config.pop("dtype", None)  # a float32 model; Keras may add its policy
        return cls(**config)

    def _compile_steps(self, xla_optimizer: bool) -> None:
        # Per-instance tf.functions (not decorated methods): every model traces its own and
        # releases them with itself. The partial gives each a key of its own in TensorFlow's
        # frequent-retracing detector, which otherwise warns when a sweep builds many models.
        top_k_spec = [*_COMPONENTS, tf.TensorSpec([], tf.int32)]
        compiled = {
            "train_components": (partial(self._train_components), _COMPONENTS),
            "test_components": (partial(self._test_components), _COMPONENTS),
            "score_components": (partial(self._score_components), _COMPONENTS),
            # masked or not is fixed per function: each is traced only if used (validation
            # ranks masked only), not both branches of a tf.cond on every model
            "top_k_masked": (partial(self._top_k_components, mask_seen=True), top_k_spec),
            "top_k_unmasked": (partial(self._top_k_components, mask_seen=False), top_k_spec),
            "train_batches": (partial(self.train_batch_group), _BATCH_GROUP),
        }
        for name, (fn, spec) in compiled.items():
            compiled_fn = tf.function(fn, input_signature=spec, reduce_retracing=True)
            setattr(self, name, compiled_fn)
        # XLA fuses Adam's elementwise passes over the items x intermediate kernels (on the
        # ML-20M shape 12 ms instead of 56 ms per step) but compiling costs ~0.4 s per model
        self.apply_gradients = tf.function(
            partial(self._apply_gradients), jit_compile=xla_optimizer
        )

    def build(self, input_shape=None) -> None:
        """Create every weight up front (the layers are chained explicitly in ``call``)."""
        width = self.original_dim
        for layer in self.encoder_layers:
            layer.build((None, width))
            width = layer.units
        self.mu_layer.build((None, width))
        if self.log_var_layer is not None:
            self.log_var_layer.build((None, width))
        width = self.mu_layer.units
        for layer in self.decoder_layers:
            layer.build((None, width))
            width = layer.units
        self.output_layer.build((None, width))
        self.built = True

    # --- the two hooks subclasses override --------------------------------------------
    def transform_input(self, x: tf.SparseTensor) -> tf.SparseTensor:
        """Input transform before dropout; identity for the seed's StandardVAE."""
        return x

    def reconstruction_loss(self, x: tf.SparseTensor, logits):
        """Per-user negative log-likelihood of the clicks ``x`` given decoder logits."""
        raise NotImplementedError

    def output_scores(self, logits):
        """Ranking scores from decoder logits (what ``score`` returns)."""
        return logits

    # --- forward ------------------------------------------------------------------------
    def encode(self, x: tf.SparseTensor, training: bool = False):
        """Return (mu, log_var) for a sparse click batch (log_var None when not VARIATIONAL)."""
        x = self.transform_input(x)
        if training and self.drop_encoder > 0:
            # dropout of a zero is a zero, so dropping the stored clicks is the dense dropout
            kept = keras.random.dropout(x.values, self.drop_encoder, seed=self.input_seed)
            x = tf.SparseTensor(x.indices, kept, x.dense_shape)
        first = self.encoder_layers[0]
        h = first.activation(sparse_matmul(x, first.kernel) + first.bias)
        for layer in self.encoder_layers[1:]:
            h = layer(h)
        if self.log_var_layer is None:
            return self.mu_layer(h), None
        return self.mu_layer(h), self.log_var_layer(h)

    def decode(self, z, training: bool = False):
        """Decoder logits (users x items) for latent codes z."""
        h = z
        for layer in self.decoder_layers:
            h = layer(h)
        return self.output_layer(self.decoder_dropout(h, training=training))

    def call(self, x, training: bool = False):
        """Scores from the posterior mean (no sampling, no dropout unless training).

        ``x``: a ``tf.SparseTensor`` of clicks, or a dense (users x items) array/tensor (so a
        network loaded with ``keras.models.load_model`` scores with ``network(x)``).
        """
        if not isinstance(x, tf.SparseTensor):
            x = tf.sparse.from_dense(tf.convert_to_tensor(x, tf.float32))
        mu, _ = self.encode(x, training=training)
        return self.output_scores(self.decode(mu, training=training))

    def per_user_loss(self, x: tf.SparseTensor, *, training: bool = False, epsilon=None):
        """Return (loss, reconstruction, kl), each one value per user.

        loss = reconstruction + beta * KL with KL = 0.5 * sum(-1 - log_var + mu^2 + exp(log_var)).
        ``epsilon`` fixes the sampling noise (tests); otherwise it is drawn from the layer's
        seed generator, also at validation time, so val_loss is a negative-ELBO estimate as
        in the seed. Dropout is active only when ``training``.
        """
        mu, log_var = self.encode(x, training=training)
        z = self.sampling(mu, log_var, epsilon=epsilon)
        logits = self.decode(z, training=training)
        recon = self.reconstruction_loss(x, logits)
        kl = 0.5 * ops.sum(-1.0 - log_var + ops.square(mu) + ops.exp(log_var), axis=-1)
        return recon + self.beta * kl, recon, kl

    def penalty(self):
        """l2_penalty * sum of squared kernels (0 when l2_penalty is 0)."""
        if self.l2_penalty == 0:
            return tf.constant(0.0)
        kernels = [w for w in self.trainable_weights if len(w.shape) == 2]
        return self.l2_penalty * tf.add_n([tf.reduce_sum(tf.square(w)) for w in kernels])

    # --- steps (compiled by the caller with tf.function) ---------------------------------
    def train_step(self, data: tf.SparseTensor, epsilon=None):
        """One Adam step on the batch-mean loss; returns the per-user loss sum (for logging).

        ``epsilon`` fixes the sampling noise (tests); the compiled path always samples.
        """
        with tf.GradientTape() as tape:
            loss, _, _ = self.per_user_loss(data, training=True, epsilon=epsilon)
            objective = tf.reduce_mean(loss) + self.penalty()
        grads = tape.gradient(objective, self.trainable_weights)
        # densified (a sparse-input gradient may arrive as IndexedSlices), every gradient has
        # a fixed shape and the update compiles once with XLA
        self.apply_gradients([tf.convert_to_tensor(g) for g in grads])
        return tf.reduce_sum(loss) + self.penalty() * tf.cast(tf.size(loss), tf.float32)

    def _apply_gradients(self, grads, variables=None, optimizer=None) -> None:
        """Adam step of ``variables`` (default: every trainable weight) with ``optimizer``
        (default: the compiled one), which must have been built with them."""
        optimizer = self.optimizer if optimizer is None else optimizer
        variables = self.trainable_weights if variables is None else variables
        if not _plain_adam(optimizer):
            optimizer.apply(grads, variables)
            return
        # Keras' Adam.update_step, op for op (so the weights are bit-identical to
        # ``optimizer.apply``), without the bookkeeping around it: ``apply`` traces 418 graph
        # ops for a 10-variable network, this 254, which saves ~0.15 s of tracing per model
        # built (a fresh model per sweep trial) and a little per step.
        lr = tf.cast(optimizer.learning_rate, tf.float32)
        step = tf.cast(optimizer.iterations + 1, tf.float32)
        beta_1_power = tf.pow(tf.cast(optimizer.beta_1, tf.float32), step)
        beta_2_power = tf.pow(tf.cast(optimizer.beta_2, tf.float32), step)
        alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        for grad, variable in zip(grads, variables, strict=True):
            m, v = adam_slots(optimizer, variable)
            m.assign_add((grad - m) * (1 - optimizer.beta_1))
            v.assign_add((tf.square(grad) - v) * (1 - optimizer.beta_2))
            variable.value.assign_sub((m * alpha) / (tf.sqrt(v) + optimizer.epsilon))
        optimizer.iterations.assign_add(1)

    def test_step(self, data: tf.SparseTensor):
        """Per-user loss sum on a validation batch (sampling on, dropout off)."""
        loss, _, _ = self.per_user_loss(data, training=False)
        return tf.reduce_sum(loss) + self.penalty() * tf.cast(tf.size(loss), tf.float32)

    def top_k(self, data: tf.SparseTensor, k, mask_seen):
        """Top-k (scores, item indices) per user, best first; seen items get -inf when masked.

        Ties go to the lower item index (``tf.math.top_k`` is stable), as in
        ``harness.evaluation.top_k_items``.
        """
        scores = self(data, training=False)
        if mask_seen:
            fill = tf.fill(tf.shape(data.values), tf.constant(-float("inf")))
            scores = tf.tensor_scatter_nd_update(scores, data.indices, fill)
        return tf.math.top_k(scores, k=k)

    def train_batch_group(
        self, rows, cols, values, row_bounds, entry_bounds, first_step, anneal, cap, steps,
        step_fn=None,
    ):  # fmt: skip
        """Adam steps on consecutive batches in one call (a ``batching.BatchGroup``).

        After each batch, as ``AnnealingCallback`` would, beta becomes
        min(step / ``steps``, ``cap``) when ``anneal`` is true, with step = ``first_step`` +
        the batches done in this call, computed in float64 and rounded to float32 as Python
        floats are. Stops after the first batch whose loss is not finite (its update is
        applied, as with one call per batch).

        ``step_fn(x)`` replaces ``train_step`` (RecVAE's encoder and decoder steps).

        Returns:
            float32 per-user loss sum of every batch run (fewer than the group's batches
            only when one was not finite: it is the last).
        """
        n_batches = tf.size(row_bounds) - 1
        sums = tf.TensorArray(tf.float32, size=n_batches, element_shape=[])

        def body(i, finite, sums):
            lo, hi = entry_bounds[i], entry_bounds[i + 1]
            n_rows = row_bounds[i + 1] - row_bounds[i]
            x = to_sparse_tensor(rows[lo:hi], cols[lo:hi], values[lo:hi], n_rows, self.original_dim)
            batch_sum = (step_fn or self.train_step)(x)
            step = tf.cast(first_step + tf.cast(i, tf.int64) + 1, tf.float64)
            annealed = tf.cast(tf.minimum(step / steps, cap), tf.float32)
            self.beta.assign(tf.where(anneal, annealed, self.beta))
            return i + 1, tf.math.is_finite(batch_sum), sums.write(i, batch_sum)

        done, _, sums = tf.while_loop(
            lambda i, finite, _: tf.logical_and(i < n_batches, finite),
            body,
            (tf.constant(0), tf.constant(True), sums),
            parallel_iterations=1,  # each step reads the weights the previous one wrote
        )
        return sums.stack()[:done]

    # --- compiled entry points taking COO components (see batching.py) -------------------
    def _train_components(self, rows, cols, values, n_rows):
        """Compiled ``train_step`` on one batch given as COO components."""
        return self.train_step(to_sparse_tensor(rows, cols, values, n_rows, self.original_dim))

    def _test_components(self, rows, cols, values, n_rows):
        """Compiled ``test_step`` on one batch given as COO components."""
        return self.test_step(to_sparse_tensor(rows, cols, values, n_rows, self.original_dim))

    def _score_components(self, rows, cols, values, n_rows):
        """Compiled scores (posterior mean, no dropout) for one chunk."""
        return self(to_sparse_tensor(rows, cols, values, n_rows, self.original_dim), training=False)

    def _top_k_components(self, rows, cols, values, n_rows, k, *, mask_seen: bool):
        """Compiled ``top_k`` for one chunk."""
        x = to_sparse_tensor(rows, cols, values, n_rows, self.original_dim)
        return tuple(self.top_k(x, k, mask_seen))

    def rank(self, x: sp.csr_matrix, k: int, mask_seen: bool = True):
        """Top-k (values, indices) per row of a CSR matrix, in chunks; numpy arrays, best first."""
        values, indices = [], []
        top_k = self.top_k_masked if mask_seen else self.top_k_unmasked
        for _, _, parts in chunks(x, EVAL_CHUNK_ROWS):
            v, i = top_k(*parts, k)
            values.append(v.numpy())
            indices.append(i.numpy())
        if not values:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int32)
        return np.concatenate(values), np.concatenate(indices)

    def predict_scores(self, x: sp.csr_matrix) -> np.ndarray:
        """Dense float32 scores (users x items) for a CSR matrix, computed in chunks."""
        out = np.empty(x.shape, dtype=np.float32)
        for start, stop, parts in chunks(x, EVAL_CHUNK_ROWS):
            out[start:stop] = self.score_components(*parts).numpy()
        return out

    def loss_sum(self, x: sp.csr_matrix) -> float:
        """Sum over users of the validation loss (sampling on, dropout off)."""
        return sum(float(self.test_components(*parts)) for _, _, parts in chunks(x, 1024))
