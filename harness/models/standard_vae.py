"""StandardVAE: the Recommenders seed's Bernoulli/BCE VAE, plus a true sigmoid variant."""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from harness.models.base import VAERecommender
from harness.models.sparse_ops import gather_clicked, row_sum
from harness.models.spec import KERAS_FORMATS, ModelSpec
from harness.models.vae import VAENetwork, register

# Keras' binary_crossentropy clips probabilities to [eps, 1 - eps]; the seed's loss inherits it.
BCE_EPSILON = 1e-7
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")


@register
class SoftmaxBernoulliNetwork(VAENetwork):
    """The seed's likelihood: softmax outputs under original_dim x binary cross-entropy.

    original_dim * mean_j BCE(x_j, p_j) = -sum_j log(1 - p_j)
    - sum_{clicked j} x_j * (log p_j - log(1 - p_j)), with p clipped to [1e-7, 1 - 1e-7] as
    Keras does; written this way so only the clicked entries are gathered.
    """

    def reconstruction_loss(self, x, logits):
        p = ops.clip(ops.softmax(logits, axis=-1), BCE_EPSILON, 1.0 - BCE_EPSILON)
        log_not_p = ops.log(1.0 - p)
        clicked = x.values * (ops.log(gather_clicked(p, x)) - gather_clicked(log_not_p, x))
        return -ops.sum(log_not_p, axis=-1) - row_sum(clicked, x)

    def output_scores(self, logits):
        return ops.softmax(logits, axis=-1)


@register
class SigmoidBernoulliNetwork(VAENetwork):
    """A true Bernoulli VAE: independent sigmoid outputs, BCE computed from the logits.

    sum_j BCE = sum_j softplus(l_j) - sum_{clicked j} x_j * l_j, stable for any logit.
    Scores are the logits: a sigmoid would saturate top items to exactly 1.0 in float32 and
    create ties; the ranking is the same.
    """

    def reconstruction_loss(self, x, logits):
        clicked = x.values * gather_clicked(logits, x)
        return ops.sum(tf.nn.softplus(logits), axis=-1) - row_sum(clicked, x)


class StandardVAE(VAERecommender):
    """Standard VAE for collaborative filtering (seed API; see ``VAERecommender``).

    Loss per user: original_dim * BCE(x, softmax(logits)) + beta * KL, batch mean.

    Args:
        output_activation: "softmax" (the seed, default) or "sigmoid" (independent
            Bernoulli outputs with BCE from logits). All other arguments as VAERecommender;
            the defaults are the seed's: ``lr_schedule="plateau"`` (ReduceLROnPlateau on
            val_loss, factor 0.2, patience 1, min_lr 1e-4) and Keras' Adam epsilon 1e-7.
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
        output_activation: str = "softmax",
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
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation={output_activation!r} is unknown: use one of "
                f"{OUTPUT_ACTIVATIONS} ('softmax' is the seed's model)"
            )
        self.output_activation = output_activation
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
        if self.output_activation == "sigmoid":
            return SigmoidBernoulliNetwork(**self._network_kwargs())
        return SoftmaxBernoulliNetwork(**self._network_kwargs())


MODEL_SPECS = (
    ModelSpec("standard_vae", StandardVAE, iterative=True, seeded=True, has_beta=True,
              formats=KERAS_FORMATS),
)  # fmt: skip
