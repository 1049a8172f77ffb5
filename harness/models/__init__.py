"""Recommender models behind one registry (``harness.models.registry``): StandardVAE and
MultVAE (Keras 3), and the reference baselines Popularity, EASE, Mult-DAE, RecVAE, iALS
(``implicit``) and RP3beta.

Every model shares one API: ``fit(x_train, x_valid=None, x_val_tr=None, x_val_te=None,
mapper=None, *, epoch_callback=None)``, ``history()``, ``best_epoch``, ``best_ndcg``,
``get_optimal_beta()``, ``ndcg_per_epoch()``, ``score(x)`` and
``recommend_k_items(x, k, remove_seen=True, *, sparse=False)`` (dense like the seed;
CSR with ``sparse=True``), ``save(path)``; ``load_model(path)`` reads any saved model.
``model_spec(name)`` says what a model can do; ``model_defaults(name)`` gives its
``conf/model/<name>.yaml``.
"""

from harness.devices import import_tensorflow

import_tensorflow()  # first: TensorFlow's start-up lines stay quiet unless asked (devices.py)

from harness.models.baselines import EASE, Popularity  # noqa: E402
from harness.models.callbacks import (  # noqa: E402
    AnnealingCallback,
    LossHistory,
    Metrics,
    TrainingDivergedError,
    beta_at,
)
from harness.models.ials import IALS  # noqa: E402
from harness.models.mult_dae import MultDAE  # noqa: E402
from harness.models.mult_vae import Mult_VAE, MultVAE  # noqa: E402
from harness.models.recvae import RecVAE  # noqa: E402
from harness.models.registry import (  # noqa: E402
    ModelSpec,
    UnknownModelError,
    build_model,
    load_model,
    model_defaults,
    model_param_names,
    model_spec,
    registered_models,
)
from harness.models.rp3beta import RP3beta  # noqa: E402
from harness.models.standard_vae import StandardVAE  # noqa: E402

__all__ = [
    "EASE",
    "IALS",
    "AnnealingCallback",
    "LossHistory",
    "Metrics",
    "ModelSpec",
    "MultDAE",
    "MultVAE",
    "Mult_VAE",
    "Popularity",
    "RP3beta",
    "RecVAE",
    "StandardVAE",
    "TrainingDivergedError",
    "UnknownModelError",
    "beta_at",
    "build_model",
    "load_model",
    "model_defaults",
    "model_param_names",
    "model_spec",
    "registered_models",
]
