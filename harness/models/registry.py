"""The model registry: every model described once, by a ``ModelSpec``.

Stages ask the spec what a model can do (``model_spec(name).iterative``, ``.seeded``,
``.has_beta``), never its name. A model's default hyperparameters live in one place, the
harness's ``conf/model/<name>.yaml`` (``model_defaults(name)``); its class keeps its own
constructor defaults for direct use of the class (the seed's, for the drop-in API).

Adding a model = one module in ``harness/models/`` (its class), one ``ModelSpec`` line in
``SPECS`` below, ``conf/model/<name>.yaml`` and ``conf/search_space/<name>.yaml``.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.models.baselines import EASE, Popularity
from harness.models.ials import IALS
from harness.models.mult_dae import MultDAE
from harness.models.mult_vae import MultVAE
from harness.models.persistence import load_as, read_record
from harness.models.recvae import RecVAE
from harness.models.rp3beta import RP3beta
from harness.models.standard_vae import StandardVAE
from harness.models.validation import MissingDependencyError

KERAS_FORMATS = (".keras",)
NPZ_FORMATS = (".npz",)


class UnknownModelError(UserError, ValueError):
    """A model name that is not registered (the message lists the registered ones)."""


@dataclass(frozen=True)
class ModelSpec:
    """What the stages need to know about a model.

    Attributes:
        name: the registry name (``conf/model/<name>.yaml``, ``models=[...]``).
        cls: the model class.
        iterative: trains in epochs (per-epoch NDCG, pruning, early stopping).
        seeded: results depend on the training seed (the benchmark runs n_seeds fits).
        has_beta: has a KL weight (optimal-beta figures and Liang et al.'s procedure).
        formats: file suffixes ``save()`` writes.
        extra: the pip extra that provides an optional dependency (None: none needed).
        module: the importable module the model needs (checked by ``check_available``).
    """

    name: str
    cls: type
    iterative: bool
    seeded: bool
    has_beta: bool
    formats: tuple[str, ...]
    extra: str | None = None
    module: str | None = None


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("standard_vae", StandardVAE, True, True, True, KERAS_FORMATS),
    ModelSpec("mult_vae", MultVAE, True, True, True, KERAS_FORMATS),
    ModelSpec("ease", EASE, False, False, False, NPZ_FORMATS),
    ModelSpec("popularity", Popularity, False, False, False, NPZ_FORMATS),
    ModelSpec("mult_dae", MultDAE, True, True, False, KERAS_FORMATS),
    ModelSpec("recvae", RecVAE, True, True, False, KERAS_FORMATS),
    ModelSpec("ials", IALS, False, True, False, NPZ_FORMATS, module="implicit"),
    ModelSpec("rp3beta", RP3beta, False, False, False, NPZ_FORMATS),
)
_BY_NAME = {spec.name: spec for spec in SPECS}
_BY_CLASS = {spec.cls.__name__: spec for spec in SPECS}

# Arguments that build_model fills from the data; never hyperparameters.
_STRUCTURAL = {"self", "n_users", "original_dim", "n_items"}


def registered_models() -> tuple[str, ...]:
    """Every registered model name, in registry order."""
    return tuple(_BY_NAME)


def model_spec(name: str) -> ModelSpec:
    """The spec of model ``name``.

    Raises:
        UnknownModelError: one line listing the registered models.
    """
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownModelError(
            f"unknown model {name!r}: choose one of {', '.join(registered_models())}"
        ) from None


def check_available(name: str) -> None:
    """Raise ``MissingDependencyError`` (one line) when the model's dependency is missing."""
    spec = model_spec(name)
    if spec.module is not None and importlib.util.find_spec(spec.module) is None:
        how = f"'vae-sweep[{spec.extra}]'" if spec.extra else spec.module
        raise MissingDependencyError(
            f"model {name!r} needs the package {spec.module!r}, which is not installed: "
            f"pip install {how}"
        )


def model_param_names(name: str) -> set[str]:
    """Every keyword ``build_model(name, ...)`` accepts (hyperparameters and run options
    such as verbose, seed, save_path; not n_users/n_items, which come from the data).

    Raises:
        UnknownModelError: unknown model name.
    """
    signature = inspect.signature(model_spec(name).cls.__init__)
    return set(signature.parameters) - _STRUCTURAL


def _conf_model_dir() -> Path:
    from harness.configs import conf_dir

    return conf_dir() / "model"


@cache
def _defaults_from(path: str, mtime: float) -> dict[str, Any]:
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {k: v for k, v in dict(values or {}).items() if k != "name"}


def model_defaults(name: str) -> dict[str, Any]:
    """The harness's defaults of model ``name``: ``conf/model/<name>.yaml`` (without "name").

    The one source of default hyperparameters for every stage (the enqueued default trial,
    integer-vs-float search intervals, the pre-flight checks).

    Raises:
        UnknownModelError: unknown model name.
        FileNotFoundError: the registered model has no config file (a broken install).
    """
    model_spec(name)
    path = _conf_model_dir() / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"model {name!r} has no config {path}: add conf/model/{name}.yaml")
    return dict(_defaults_from(str(path), os.path.getmtime(path)))


def build_model(name: str, n_users: int, n_items: int, **params: Any):
    """Construct a model by name for data with ``n_users`` training users and ``n_items``.

    Unspecified parameters take the class defaults (the seed's), not the yaml's; the harness
    passes the composed ``conf/model/<name>.yaml`` explicitly.

    Raises:
        UnknownModelError: unknown model name (the message lists the registered ones).
        MissingDependencyError: the model's optional dependency is not installed.
        ValueError: unknown parameter (the message lists the valid ones), or an invalid
            parameter value.
    """
    cls = model_spec(name).cls
    check_available(name)
    unknown = set(params) - model_param_names(name)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for model {name!r}: valid parameters are "
            f"{sorted(model_param_names(name))}"
        )
    if "original_dim" in inspect.signature(cls.__init__).parameters:  # the seed's signature
        return cls(n_users, n_items, **params)
    return cls(**params, n_items=n_items)


def spec_of_class(class_name: str) -> ModelSpec:
    """The spec of the model class called ``class_name`` (as saved in a model file).

    Raises:
        ValueError: no registered model has that class.
    """
    if class_name not in _BY_CLASS:
        raise ValueError(
            f"unknown model class {class_name!r} in the file: expected one of {sorted(_BY_CLASS)}"
        )
    return _BY_CLASS[class_name]


def load_model(
    path: str | os.PathLike, *, expected: type | str | None = None, n_items: int | None = None
):
    """Load any model written by ``model.save(path)``; scores equal the saved model's.

    Args:
        path: a file written by ``save`` (``ModelSpec.formats``: .keras or .npz).
        expected: a model class or registry name the file must hold (None = any).
        n_items: the item count the file must have been trained on (None = any).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a model file, or another class / item count than expected (the
            message names both).
    """
    if isinstance(expected, str):
        expected = _BY_NAME[expected].cls if expected in _BY_NAME else expected
    record = read_record(path)
    cls = spec_of_class(record["class"]).cls
    return load_as(path, cls, expected=expected, n_items=n_items, record=record)
