"""Models by name, their default hyperparameters, and parameter-name checks for sweeps."""

from __future__ import annotations

import inspect
from typing import Any

from harness.models.baselines import EASE, Popularity
from harness.models.mult_vae import MultVAE
from harness.models.standard_vae import StandardVAE

MODEL_CLASSES: dict[str, type] = {
    "standard_vae": StandardVAE,
    "mult_vae": MultVAE,
    "ease": EASE,
    "popularity": Popularity,
}

# Arguments that build_model fills from the data; never hyperparameters.
_STRUCTURAL = {"self", "n_users", "original_dim", "n_items"}

MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    # The Recommenders seed's StandardVAE defaults (n_epochs 400 is the library default; the
    # harness configs use fewer).
    "standard_vae": {
        "intermediate_dim": 200,
        "latent_dim": 70,
        "n_epochs": 400,
        "batch_size": 100,
        "k": 100,
        "drop_encoder": 0.5,
        "drop_decoder": 0.5,
        "beta": 1.0,
        "annealing": False,
        "anneal_cap": 1.0,
        "total_anneal_steps": None,
        "learning_rate": 1e-3,
        "output_activation": "softmax",
        "n_hidden_layers": 1,
        "l2_penalty": 0.0,
        # the seed's ReduceLROnPlateau on val_loss (see VAERecommender: annealing defeats it)
        "lr_schedule": "plateau",
        "plateau_factor": 0.2,
        "plateau_patience": 1,
        "plateau_min_lr": 1e-4,
        "adam_epsilon": 1e-7,
    },
    # Liang et al. 2018's Mult-VAE (600-200-600, input dropout 0.5, none in the decoder, beta
    # annealed to 0.2, batch 500, 200 epochs). Liang anneal over a fixed 200,000 batches,
    # tuned to ML-20M; None uses the seed formula instead, which reaches the cap after 80% of
    # the epochs on any dataset size (with 200,000, beta would barely leave 0 on ml-100k).
    "mult_vae": {
        "intermediate_dim": 600,
        "latent_dim": 200,
        "n_epochs": 200,
        "batch_size": 500,
        "k": 100,
        "drop_encoder": 0.5,
        "drop_decoder": 0.0,
        "beta": 1.0,
        "annealing": True,
        "anneal_cap": 0.2,
        "total_anneal_steps": None,
        "learning_rate": 1e-3,
        "n_hidden_layers": 1,
        "l2_penalty": 0.0,
        # Liang et al.: constant Adam 1e-3 with TF1's epsilon 1e-8
        "lr_schedule": "constant",
        "plateau_factor": 0.2,
        "plateau_patience": 1,
        "plateau_min_lr": 1e-4,
        "adam_epsilon": 1e-8,
    },
    "ease": {"lam": 500.0, "k": 100},
    "popularity": {"k": 100},
}


def _model_class(name: str) -> type:
    try:
        return MODEL_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: choose one of {sorted(MODEL_CLASSES)}") from None


def model_param_names(name: str) -> set[str]:
    """Every keyword ``build_model(name, ...)`` accepts (hyperparameters and run options
    such as verbose, seed, save_path; not n_users/n_items, which come from the data).

    Raises:
        ValueError: unknown model name.
    """
    signature = inspect.signature(_model_class(name).__init__)
    return set(signature.parameters) - _STRUCTURAL


def build_model(name: str, n_users: int, n_items: int, **params: Any):
    """Construct a model by name for data with ``n_users`` training users and ``n_items``.

    Unspecified parameters take the class defaults (the seed's), not MODEL_DEFAULTS.

    Raises:
        ValueError: unknown model name or parameter (the message lists the valid ones), or
            an invalid parameter value.
    """
    cls = _model_class(name)
    unknown = set(params) - model_param_names(name)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for model {name!r}: valid parameters are "
            f"{sorted(model_param_names(name))}"
        )
    if name in ("ease", "popularity"):
        return cls(**params, n_items=n_items)
    return cls(n_users, n_items, **params)
