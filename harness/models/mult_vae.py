"""Mult-VAE (Liang et al. 2018) on the shared network and training path."""

from __future__ import annotations

import tensorflow as tf

from harness.models.base import VAERecommender
from harness.models.sparse_ops import gather_clicked, row_sum
from harness.models.spec import KERAS_FORMATS, ModelSpec
from harness.models.vae import VAENetwork, register


@register
class MultinomialNetwork(VAENetwork):
    """L2-normalised input; loss -sum_j x_j * log_softmax(logits)_j; scores are logits.

    Initialised as Liang et al.'s code: Glorot-uniform kernels (mu and log_var with the range
    of their joint hidden x 2*latent matrix) and truncated-normal biases with sd 0.001.
    """

    BIAS_STDDEV = 0.001
    JOINT_LATENT_FAN = True

    def transform_input(self, x):
        norms = tf.sqrt(row_sum(tf.square(x.values), x))
        # tf.nn.l2_normalize's epsilon (1e-12 on the squared norm): an empty row stays 0
        values = x.values / tf.gather(tf.maximum(norms, 1e-6), x.indices[:, 0])
        return tf.SparseTensor(x.indices, values, x.dense_shape)

    def reconstruction_loss(self, x, logits):
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        return -row_sum(x.values * gather_clicked(log_probs, x), x)


class MultVAE(VAERecommender):
    """Multinomial VAE (Liang et al. 2018) with the StandardVAE constructor (no
    ``output_activation``); see ``VAERecommender`` for every argument.

    Defaults follow Liang et al.'s code where the seed's Mult_VAE differs: no decoder
    dropout (``drop_decoder=0.0``), a constant learning rate (``lr_schedule="constant"``;
    "plateau" is the seed's ReduceLROnPlateau on val_loss, which annealing defeats, see
    ``VAERecommender``), Adam epsilon 1e-8 (TF1's AdamOptimizer) and biases drawn from a
    truncated normal with sd 0.001. ``score`` returns decoder logits, which can be negative.
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
        drop_decoder: float = 0.0,
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
        lr_schedule: str = "constant",
        plateau_factor: float = 0.2,
        plateau_patience: int = 1,
        plateau_min_lr: float = 1e-4,
        adam_epsilon: float = 1e-8,
        patience: int | None = None,
        anneal_epochs: float | None = None,
    ) -> None:
        super().__init__(
            n_users, original_dim, intermediate_dim, latent_dim, n_epochs, batch_size, k,
            verbose, drop_encoder, drop_decoder, beta, annealing, anneal_cap, seed, save_path,
            learning_rate=learning_rate, total_anneal_steps=total_anneal_steps,
            n_hidden_layers=n_hidden_layers, l2_penalty=l2_penalty, lr_schedule=lr_schedule,
            plateau_factor=plateau_factor, plateau_patience=plateau_patience,
            plateau_min_lr=plateau_min_lr, adam_epsilon=adam_epsilon,
            patience=patience, anneal_epochs=anneal_epochs,
        )  # fmt: skip

    def _build_network(self) -> VAENetwork:
        return MultinomialNetwork(**self._network_kwargs())


MODEL_SPECS = (
    ModelSpec("mult_vae", MultVAE, iterative=True, seeded=True, has_beta=True,
              formats=KERAS_FORMATS),
)  # fmt: skip

Mult_VAE = MultVAE
"""Alias under the Recommenders name."""
