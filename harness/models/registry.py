"""The model registry: every model described once, by a ``ModelSpec``.

Stages ask the spec what a model can do (``model_spec(name).iterative``, ``.seeded``,
``.has_beta``), never its name. A model's default hyperparameters live in one place, the
harness's ``conf/model/<name>.yaml`` (``model_defaults(name)``); its class keeps its own
constructor defaults for direct use of the class (the seed's, for the drop-in API).

Each module of ``harness/models/`` that declares ``MODEL_SPECS = (ModelSpec(...), ...)`` is
registered when this module is imported. Adding a model = one module in ``harness/models/``
(its class and its ``MODEL_SPECS``), ``conf/model/<name>.yaml`` and
``conf/search_space/<name>.yaml``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from functools import cache
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.models.persistence import load_as, read_record
from harness.models.spec import KERAS_FORMATS, NPZ_FORMATS, ModelSpec
from harness.models.validation import MissingDependencyError

__all__ = [
    "KERAS_FORMATS",
    "NPZ_FORMATS",
    "MissingDependencyError",
    "ModelSpec",
    "UnknownModelError",
    "build_model",
    "check_available",
    "load_model",
    "model_defaults",
    "model_param_names",
    "model_spec",
    "registered_models",
]

# Report and listing order of the shipped models; models added later follow by name.
ORDER = ("standard_vae", "mult_vae", "ease", "popularity", "mult_dae", "recvae", "ials", "rp3beta")
_MODELS_DIR = Path(__file__).resolve().parent


class UnknownModelError(UserError, ValueError):
    """A model name that is not registered (the message lists the registered ones)."""


def _discover() -> tuple[ModelSpec, ...]:
    """The ``MODEL_SPECS`` of every module in ``harness/models/`` that declares them (found
    by a look at the source first, so modules without models, such as the plotting one,
    are not imported)."""
    specs: dict[str, ModelSpec] = {}
    for path in sorted(_MODELS_DIR.glob("*.py")):
        if path.stem in ("__init__", "registry") or "MODEL_SPECS =" not in path.read_text():
            continue
        module = importlib.import_module(f"{__package__}.{path.stem}")
        for spec in getattr(module, "MODEL_SPECS", ()):
            if spec.name in specs:
                raise RuntimeError(f"model {spec.name!r} is declared twice ({path.name})")
            specs[spec.name] = spec
    rank = {name: i for i, name in enumerate(ORDER)}
    return tuple(sorted(specs.values(), key=lambda s: (rank.get(s.name, len(ORDER)), s.name)))


SPECS: tuple[ModelSpec, ...] = _discover()
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
