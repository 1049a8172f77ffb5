"""Mult-DAE (Liang et al. 2018): the Mult-VAE network without sampling and KL, on the shared
VAE builder and training path.

As Liang et al.'s ``MultiDAE`` (dawenl/vae_cf): L2-normalised input, dropout (keep 0.5) on
it, tanh layers items -> 600 -> 200 -> 600 and a linear output layer to logits (tanh on the
200-wide code too), multinomial log-likelihood, Glorot-uniform kernels and truncated-normal
biases (sd 0.001), Adam 1e-3 with epsilon 1e-8 (TF1), batches of 500 users.

Weight decay: Liang's loss is ``neg_ll + 2 * reg_var`` with ``reg_var =
l2_regularizer(lam_tf)(kernels) = lam_tf * sum(w**2) / 2`` (TensorFlow's l2_loss halves it,
and the 2 undoes that) and ``lam_tf = 0.01 / batch_size`` in their notebook: the batch-mean
negative log-likelihood plus ``lam / batch_size * sum of squared kernels`` (biases excluded)
with ``lam = 0.01``. Here ``lam`` is that 0.01, divided by ``batch_size`` internally.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from harness.models.base import VAERecommender
from harness.models.mult_vae import MultinomialNetwork
from harness.models.spec import KERAS_FORMATS, ModelSpec
from harness.models.vae import VAENetwork, register
from harness.models.validation import check_vae_param

# the VAE rules' other arguments, fixed for a DAE (no KL weight, no decoder dropout)
_DAE_FIXED = {"beta": 1.0, "annealing": False, "anneal_cap": 1.0, "total_anneal_steps": None,
              "drop_decoder": 0.0, "l2_penalty": 0.0}  # fmt: skip


def check_lam(lam) -> None:
    """Mult-DAE's weight decay: a finite number >= 0."""
    if (
        isinstance(lam, bool)
        or not isinstance(lam, int | float)
        or not (math.isfinite(lam) and lam >= 0)
    ):
        raise ValueError(f"lam={lam!r} must be a finite weight decay >= 0 (Liang et al.: 0.01)")


@register
class DenoisingNetwork(MultinomialNetwork):
    """Liang et al.'s MultiDAE network: no log_var, no sampling; loss = multinomial NLL."""

    VARIATIONAL = False
    LATENT_ACTIVATION = "tanh"
    JOINT_LATENT_FAN = False

    def per_user_loss(self, x: tf.SparseTensor, *, training: bool = False, epsilon=None):
        """(loss, reconstruction, kl) per user; kl is 0 and loss the reconstruction."""
        code, _ = self.encode(x, training=training)
        recon = self.reconstruction_loss(x, self.decode(code, training=training))
        return recon, recon, tf.zeros_like(recon)


class MultDAE(VAERecommender):
    """Multinomial denoising autoencoder (Liang et al. 2018), Liang's settings as defaults.

    Args:
        n_users, original_dim: training users and items.
        intermediate_dim, latent_dim: hidden and code widths (600, 200).
        n_epochs, batch_size, k, verbose, drop_encoder, seed, save_path, learning_rate,
        n_hidden_layers, lr_schedule, plateau_*, adam_epsilon, patience: as
            ``VAERecommender`` (input dropout 0.5; constant Adam 1e-3, epsilon 1e-8).
        lam: Liang's weight decay 0.01: the loss adds ``lam / batch_size`` times the sum of
            squared kernels to the batch-mean negative log-likelihood (module docstring).

    ``get_optimal_beta()`` is NaN: there is no KL weight (the history's beta column is 0).
    """

    def __init__(
        self,
        n_users: int,
        original_dim: int,
        intermediate_dim: int = 600,
        latent_dim: int = 200,
        n_epochs: int = 200,
        batch_size: int = 500,
        k: int = 100,
        verbose: int = 1,
        drop_encoder: float = 0.5,
        seed: int | None = None,
        save_path: str | None = None,
        *,
        lam: float = 0.01,
        learning_rate: float = 1e-3,
        n_hidden_layers: int = 1,
        lr_schedule: str = "constant",
        plateau_factor: float = 0.2,
        plateau_patience: int = 1,
        plateau_min_lr: float = 1e-4,
        adam_epsilon: float = 1e-8,
        patience: int | None = None,
    ) -> None:
        check_lam(lam)
        self.lam = lam
        super().__init__(
            n_users, original_dim, intermediate_dim, latent_dim, n_epochs, batch_size, k,
            verbose, drop_encoder, 0.0, 0.0, False, 1.0, seed, save_path,
            learning_rate=learning_rate, n_hidden_layers=n_hidden_layers,
            l2_penalty=lam / batch_size, lr_schedule=lr_schedule,
            plateau_factor=plateau_factor, plateau_patience=plateau_patience,
            plateau_min_lr=plateau_min_lr, adam_epsilon=adam_epsilon, patience=patience,
        )  # fmt: skip

    @classmethod
    def check_param(cls, name: str, value: Any, context: dict[str, Any]) -> None:
        """Check one hyperparameter before any data loads (the VAE rules, and ``lam``)."""
        if name == "lam":
            check_lam(value)
            return
        check_vae_param(name, value, {**_DAE_FIXED, **context})

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params.pop("total_anneal_steps", None)
        return params

    def get_optimal_beta(self) -> float:
        """NaN: a denoising autoencoder has no KL weight."""
        return math.nan

    def _build_network(self) -> VAENetwork:
        return DenoisingNetwork(**self._network_kwargs())


MODEL_SPECS = (
    ModelSpec("mult_dae", MultDAE, iterative=True, seeded=True, has_beta=False,
              formats=KERAS_FORMATS),
)  # fmt: skip
