"""RecVAE (Shenbin et al. 2020) in Keras 3 on the shared VAE training path, sparse input.

Follows the authors' reference implementation ``ilya-shenbin/RecVAE``, branch ``master``
(the current model, which its README says differs slightly from the paper's ``wsdm`` code):

- encoder: L2-normalised clicks, dropout (0.5 in encoder passes, none in decoder passes),
  five dense layers of ``intermediate_dim`` with swish, each followed by LayerNorm
  (epsilon 0.1), layer i's input being the sum of layer i-1's dense output and every earlier
  block's output (``ln_i(swish(fc_i(h_{i-1}) + h_1 + ... + h_{i-1}))``); then mu and
  log_var (``latent_dim``);
- decoder: one dense layer latent -> items (logits), multinomial likelihood of the raw clicks;
- composite prior per latent dimension: a mixture of N(0, 1), the posterior of the encoder
  as it was after the previous epoch's encoder passes (``update_prior``), and a wide N(0,
  e^10), with weights 3/20, 15/20, 2/20;
- KL term: sum over dimensions of log q(z|x) - log p(z) at the sampled z, weighted per user
  by ``gamma`` times the user's number of clicks;
- alternating updates: each epoch runs ``n_enc_epochs`` (3) passes over the training users
  updating the encoder only, copies the encoder into the prior, then ``n_dec_epochs`` (1)
  passes updating the decoder only, with an Adam optimiser of its own per part (lr 5e-4);
- PyTorch's default initialisation (``nn.Linear``: kernel and bias U(+-1/sqrt(fan_in))); the
  prior's encoder starts from its own random weights, as in the reference.

Scores are the decoder's logits at the posterior mean: a fold-in user is encoded, never
trained on. The README's differences table lists what differs from the reference.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from harness.models.base import VAERecommender
from harness.models.mult_vae import MultinomialNetwork
from harness.models.sparse_ops import row_sum, sparse_matmul
from harness.models.spec import KERAS_FORMATS, ModelSpec
from harness.models.vae import _BATCH_GROUP, Sampling, VAENetwork, _seeded, register
from harness.models.validation import check_positive_int, check_vae_param

N_BLOCKS = 5
LAYER_NORM_EPSILON = 0.1
MIXTURE_WEIGHTS = (3 / 20, 15 / 20, 2 / 20)  # standard normal, previous posterior, wide normal
WIDE_LOG_VAR = 10.0
_LOG_2PI = math.log(2 * math.pi)
_RECVAE_FIXED = {"beta": 1.0, "annealing": False, "anneal_cap": 1.0, "total_anneal_steps": None,
                 "drop_decoder": 0.0, "l2_penalty": 0.0, "n_hidden_layers": 1}  # fmt: skip


def check_gamma(gamma) -> None:
    """RecVAE's KL scale per click: finite and > 0."""
    if (
        isinstance(gamma, bool)
        or not isinstance(gamma, int | float)
        or not (math.isfinite(gamma) and gamma > 0)
    ):
        raise ValueError(
            f"gamma={gamma!r} must be > 0 (the KL weight per click of a user), e.g. 0.005"
        )


def log_norm_pdf(x, mu, log_var):
    """Element-wise log density of N(mu, exp(log_var)) at x."""
    return -0.5 * (log_var + _LOG_2PI + tf.square(x - mu) / tf.exp(log_var))


def _torch_dense(units: int, fan_in: int, seed: int | None, trainable: bool = True):
    """A Dense layer initialised as PyTorch's nn.Linear: kernel and bias U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.layers.Dense(
        units,
        kernel_initializer=keras.initializers.VarianceScaling(
            scale=1 / 3, mode="fan_in", distribution="uniform", seed=seed
        ),
        bias_initializer=keras.initializers.RandomUniform(
            -bound, bound, seed=None if seed is None else seed + 1000
        ),
        trainable=trainable,
    )


@register
class RecVAENetwork(MultinomialNetwork):
    """RecVAE's encoder, decoder and composite prior (see the module docstring).

    Extra args: ``gamma`` (KL weight per click), ``learning_rate`` and ``adam_epsilon`` of
    the decoder's own Adam (the compiled optimizer updates the encoder).
    """

    def __init__(
        self,
        original_dim: int,
        intermediate_dim: int,
        latent_dim: int,
        beta: tf.Variable | float = 0.0,
        *,
        gamma: float = 0.005,
        learning_rate: float = 5e-4,
        adam_epsilon: float = 1e-8,
        **kwargs,
    ) -> None:
        super().__init__(original_dim, intermediate_dim, latent_dim, beta, **kwargs)
        self.gamma, self.learning_rate, self.adam_epsilon = gamma, learning_rate, adam_epsilon
        self.decoder_optimizer = keras.optimizers.Adam(learning_rate, epsilon=adam_epsilon)
        self.decoder_optimizer.build(self.decoder_variables())

    def _make_layers(self, dense) -> None:
        hidden, seed = self.intermediate_dim, self.seed

        def encoder(offset: int, trainable: bool):
            blocks = [
                _torch_dense(hidden, self.original_dim if i == 0 else hidden,
                             _seeded(seed, offset + i), trainable)
                for i in range(N_BLOCKS)
            ]  # fmt: skip
            norms = [
                keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, trainable=trainable)
                for _ in range(N_BLOCKS)
            ]
            mu = _torch_dense(self.latent_dim, hidden, _seeded(seed, offset + 10), trainable)
            log_var = _torch_dense(self.latent_dim, hidden, _seeded(seed, offset + 11), trainable)
            return blocks, norms, mu, log_var

        self.encoder_layers, self.encoder_norms, self.mu_layer, self.log_var_layer = encoder(
            0, True
        )
        # the prior's copy of the encoder: never trained, overwritten by update_prior
        self.prior_layers, self.prior_norms, self.prior_mu, self.prior_log_var = encoder(20, False)
        self.sampling = Sampling(seed=_seeded(seed, 200))
        self.decoder_layers = []
        self.output_layer = _torch_dense(self.original_dim, self.latent_dim, _seeded(seed, 500))
        self.input_seed = keras.random.SeedGenerator(_seeded(seed, 600))

    def build(self, input_shape=None) -> None:
        for blocks, norms, mu, log_var in (
            (self.encoder_layers, self.encoder_norms, self.mu_layer, self.log_var_layer),
            (self.prior_layers, self.prior_norms, self.prior_mu, self.prior_log_var),
        ):
            width = self.original_dim
            for layer, norm in zip(blocks, norms, strict=True):
                layer.build((None, width))
                norm.build((None, self.intermediate_dim))
                width = self.intermediate_dim
            mu.build((None, width))
            log_var.build((None, width))
        self.output_layer.build((None, self.latent_dim))
        self.built = True

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            gamma=self.gamma, learning_rate=self.learning_rate, adam_epsilon=self.adam_epsilon
        )
        return config

    def encoder_variables(self) -> list:
        layers = [*self.encoder_layers, *self.encoder_norms, self.mu_layer, self.log_var_layer]
        return [w for layer in layers for w in layer.trainable_weights]

    def decoder_variables(self) -> list:
        return list(self.output_layer.trainable_weights)

    def _compile_steps(self, xla_optimizer: bool) -> None:
        super()._compile_steps(xla_optimizer)
        for name, step in (("encoder", self.encoder_step), ("decoder", self.decoder_step)):
            fn = partial(self.train_batch_group, step_fn=step)
            compiled = tf.function(fn, input_signature=_BATCH_GROUP, reduce_retracing=True)
            setattr(self, f"train_{name}_batches", compiled)

    # --- forward --------------------------------------------------------------------------
    def _encode_with(self, x: tf.SparseTensor, blocks, norms, mu, log_var):
        first = blocks[0]
        h = norms[0](tf.nn.silu(sparse_matmul(x, first.kernel) + first.bias))
        total = h
        for layer, norm in zip(blocks[1:], norms[1:], strict=True):
            h = norm(tf.nn.silu(layer(h) + total))
            total = total + h
        return mu(h), log_var(h)

    def encode(self, x: tf.SparseTensor, training: bool = False):
        """(mu, log_var); input dropout only when ``training``."""
        x = self.transform_input(x)
        if training and self.drop_encoder > 0:
            kept = keras.random.dropout(x.values, self.drop_encoder, seed=self.input_seed)
            x = tf.SparseTensor(x.indices, kept, x.dense_shape)
        return self._encode_with(
            x, self.encoder_layers, self.encoder_norms, self.mu_layer, self.log_var_layer
        )

    def decode(self, z, training: bool = False):
        return self.output_layer(z)

    def log_prior(self, x: tf.SparseTensor, z):
        """log p(z) per latent dimension under the composite prior for users ``x``."""
        post_mu, post_log_var = self._encode_with(
            self.transform_input(x), self.prior_layers, self.prior_norms, self.prior_mu,
            self.prior_log_var,
        )  # fmt: skip
        zeros = tf.zeros_like(z)
        parts = [
            log_norm_pdf(z, zeros, zeros),
            log_norm_pdf(z, post_mu, post_log_var),
            log_norm_pdf(z, zeros, zeros + WIDE_LOG_VAR),
        ]
        parts = [p + math.log(w) for p, w in zip(parts, MIXTURE_WEIGHTS, strict=True)]
        return tf.reduce_logsumexp(tf.stack(parts, axis=-1), axis=-1)

    def per_user_loss(
        self, x: tf.SparseTensor, *, training: bool = False, epsilon=None, dropout: bool = True
    ):
        """(loss, reconstruction, kl) per user: loss = recon + gamma * n_clicks * kl, with
        kl = sum_d log q(z_d|x) - log p(z_d) at the sampled z (as the reference)."""
        mu, log_var = self.encode(x, training=training and dropout)
        z = self.sampling(mu, log_var, epsilon=epsilon)
        recon = self.reconstruction_loss(x, self.decode(z))
        kl = tf.reduce_sum(log_norm_pdf(z, mu, log_var) - self.log_prior(x, z), axis=-1)
        weight = self.gamma * row_sum(x.values, x)
        return recon + weight * kl, recon, kl

    # --- steps ----------------------------------------------------------------------------
    def _part_step(self, x, variables, optimizer, dropout: bool):
        with tf.GradientTape() as tape:
            loss, _, _ = self.per_user_loss(x, training=True, dropout=dropout)
            objective = tf.reduce_mean(loss)
        grads = tape.gradient(objective, variables)
        self._apply_gradients([tf.convert_to_tensor(g) for g in grads], variables, optimizer)
        return tf.reduce_sum(loss)

    def encoder_step(self, x: tf.SparseTensor, epsilon=None):
        """One Adam step of the encoder (input dropout on); returns the per-user loss sum."""
        return self._part_step(x, self.encoder_variables(), self.optimizer, True)

    def decoder_step(self, x: tf.SparseTensor, epsilon=None):
        """One Adam step of the decoder (no input dropout); returns the per-user loss sum."""
        return self._part_step(x, self.decoder_variables(), self.decoder_optimizer, False)

    def train_step(self, data: tf.SparseTensor, epsilon=None):
        """An encoder step then a decoder step (the compiled epochs alternate whole passes)."""
        self.encoder_step(data)
        return self.decoder_step(data)

    def update_prior(self) -> None:
        """Copy the encoder's weights into the prior's encoder (the reference's
        ``update_prior``, after each epoch's encoder passes)."""
        current = [*self.encoder_layers, *self.encoder_norms, self.mu_layer, self.log_var_layer]
        prior = [*self.prior_layers, *self.prior_norms, self.prior_mu, self.prior_log_var]
        for src, dst in zip(current, prior, strict=True):
            for a, b in zip(src.weights, dst.weights, strict=True):
                b.assign(a)


class RecVAE(VAERecommender):
    """RecVAE (Shenbin et al. 2020), the reference's settings as defaults.

    Args:
        n_users, original_dim: training users and items.
        intermediate_dim, latent_dim: encoder width and latent size (600, 200).
        n_epochs: epochs, each = ``n_enc_epochs`` encoder passes + ``n_dec_epochs`` decoder
            passes over the training users (the reference: 50 on ML-20M).
        batch_size, k, verbose, seed, save_path, patience: as ``VAERecommender``.
        drop_encoder: input dropout of the encoder passes (0.5).
        gamma: KL weight per click: a user with n clicks has beta = gamma * n (0.005).
        learning_rate, adam_epsilon: of both Adam optimisers (5e-4, PyTorch's 1e-8).
        n_enc_epochs, n_dec_epochs: passes per epoch of each part (3, 1).

    ``get_optimal_beta()`` is NaN: beta is per user (gamma scaling), not one value.
    """

    def __init__(
        self,
        n_users: int,
        original_dim: int,
        intermediate_dim: int = 600,
        latent_dim: int = 200,
        n_epochs: int = 50,
        batch_size: int = 500,
        k: int = 100,
        verbose: int = 1,
        drop_encoder: float = 0.5,
        gamma: float = 0.005,
        seed: int | None = None,
        save_path: str | None = None,
        *,
        learning_rate: float = 5e-4,
        n_enc_epochs: int = 3,
        n_dec_epochs: int = 1,
        adam_epsilon: float = 1e-8,
        patience: int | None = None,
    ) -> None:
        check_gamma(gamma)
        check_positive_int(n_enc_epochs, "n_enc_epochs")
        check_positive_int(n_dec_epochs, "n_dec_epochs")
        self.gamma, self.n_enc_epochs, self.n_dec_epochs = gamma, n_enc_epochs, n_dec_epochs
        super().__init__(
            n_users, original_dim, intermediate_dim, latent_dim, n_epochs, batch_size, k,
            verbose, drop_encoder, 0.0, 0.0, False, 1.0, seed, save_path,
            learning_rate=learning_rate, lr_schedule="constant", adam_epsilon=adam_epsilon,
            patience=patience,
        )  # fmt: skip

    @classmethod
    def check_param(cls, name: str, value: Any, context: dict[str, Any]) -> None:
        """Check one hyperparameter before any data loads (gamma, passes, the VAE rules)."""
        if name == "gamma":
            check_gamma(value)
        elif name in ("n_enc_epochs", "n_dec_epochs"):
            check_positive_int(value, name)
        else:
            check_vae_param(name, value, {**_RECVAE_FIXED, **context})

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params.pop("total_anneal_steps", None)
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}

    def get_optimal_beta(self) -> float:
        """NaN: RecVAE's KL weight is per user (gamma times the user's clicks)."""
        return math.nan

    def _network_kwargs(self) -> dict:
        kwargs = super()._network_kwargs()
        kwargs.update(
            gamma=self.gamma, learning_rate=self.learning_rate, adam_epsilon=self.adam_epsilon
        )
        return kwargs

    def _build_network(self) -> VAENetwork:
        return RecVAENetwork(**self._network_kwargs())

    def _epoch_passes(self):
        for _ in range(self.n_enc_epochs):
            yield self.network.train_encoder_batches
        self.network.update_prior()
        for _ in range(self.n_dec_epochs):
            yield self.network.train_decoder_batches


# beta is per user (gamma times clicks), not one KL weight: no optimal-beta figures
MODEL_SPECS = (
    ModelSpec("recvae", RecVAE, iterative=True, seeded=True, has_beta=False,
              formats=KERAS_FORMATS),
)  # fmt: skip
