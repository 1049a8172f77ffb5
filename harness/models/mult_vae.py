"""Mult-VAE (Liang et al. 2018) on the shared network and training path."""

from __future__ import annotations

import tensorflow as tf

from harness.models.base import VAERecommender
from harness.models.sparse_ops import gather_clicked, row_sum
from harness.models.vae import VAENetwork


class MultinomialNetwork(VAENetwork):
    """L2-normalised input; loss -sum_j x_j * log_softmax(logits)_j; scores are logits."""

    def transform_input(self, x):
        norms = tf.sqrt(row_sum(tf.square(x.values), x))
        # tf.nn.l2_normalize's epsilon (1e-12 on the squared norm): an empty row stays 0
        values = x.values / tf.gather(tf.maximum(norms, 1e-6), x.indices[:, 0])
        return tf.SparseTensor(x.indices, values, x.dense_shape)

    def reconstruction_loss(self, x, logits):
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        return -row_sum(x.values * gather_clicked(log_probs, x), x)


class MultVAE(VAERecommender):
    """Multinomial VAE with the StandardVAE constructor (no ``output_activation``).

    ``score`` returns decoder logits, which can be negative; ``recommend_k_items`` keeps
    them as explicit CSR entries. See ``VAERecommender`` for every argument.
    """

    def _build_network(self) -> VAENetwork:
        return MultinomialNetwork(**self._network_kwargs())


Mult_VAE = MultVAE
"""Alias under the Recommenders name."""
