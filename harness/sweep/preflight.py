"""Checks that run before any data is loaded: fail early, with one line naming key and range.

- `check_model_config`: every fixed model parameter and every bound and choice of the search
  space against the model's own parameter rules (the class's `check_param` where it has one,
  e.g. the VAEs' `harness.models.validation` rules; else its constructor, which is cheap), so `search_space.drop_encoder=
  'interval(0.9,1.5)'` is refused before the data loads, not inside trial 0.
- `check_protocol`: the protocol's parameters (`harness.data.protocol`'s own normalisation)
  and that the stages have users to work with (a sweep needs validation users, a benchmark
  test users).
- `check_overrides`: a `model.X=...` (or `models.<name>.X=...`) override of a key the search
  space samples would be silently ignored by the trials; it is an error naming both keys.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from optuna.distributions import CategoricalDistribution

from harness.sweep.settings import SweepConfigError
from harness.sweep.space import SearchSpace


def _bounds(dist: Any) -> list[tuple[str, Any]]:
    """(description, value) of every value of a distribution that a rule must accept."""
    if isinstance(dist, CategoricalDistribution):
        return [("has choice", c) for c in dist.choices]
    return [("has lower bound", dist.low), ("includes", dist.high)]


def _model_class(model_name: str) -> type:
    from harness.models.registry import model_spec

    return model_spec(model_name).cls


def _checker(model_name: str, context: Mapping[str, Any]):
    """A function (name, value) -> None raising ValueError/TypeError on a bad value."""
    cls = _model_class(model_name)
    check_param = getattr(cls, "check_param", None)
    if check_param is not None:  # models whose constructor is costly (builds a network)
        return lambda name, value: check_param(name, value, dict(context))
    accepted = set(inspect.signature(cls).parameters) - {"n_items", "n_users", "original_dim"}

    def construct(name: str, value: Any) -> None:
        # The closed-form models check their parameters in the constructor: cheap, no data.
        args = {k: v for k, v in context.items() if k in accepted}
        if name in accepted:
            cls(**{**args, name: value})

    return construct


def check_model_config(
    model_name: str,
    model_params: Mapping[str, Any],
    space: SearchSpace,
    expressions: Mapping[str, Any],
) -> None:
    """Check fixed parameters and every search-space bound/choice against the model's rules.

    Args:
        model_name: The model.
        model_params: Its config (`cfg.model`; "name" ignored).
        space: The parsed search space.
        expressions: The raw search-space entries (quoted in messages).

    Raises:
        SweepConfigError: One line: the key, the offending value and the allowed range.
    """
    from harness.models.registry import check_available, model_defaults

    try:
        check_available(model_name)
    except ImportError as error:
        raise SweepConfigError(str(error)) from None
    fixed = {k: v for k, v in model_params.items() if k != "name"} | space.fixed
    context = {**model_defaults(model_name), **fixed}
    check = _checker(model_name, context)
    for name, value in fixed.items():
        if name in space.distributions:
            continue  # sampled: its bounds are checked below
        try:
            # A check covers every parameter at once (rules may depend on another one, e.g.
            # anneal_cap on annealing; a constructor checks them all).
            check(name, value)
        except (ValueError, TypeError) as error:
            bad = str(error).split("=", 1)[0]  # messages start with the bad one's name
            bad = bad if bad in fixed else name
            key = f"search_space.{bad}" if bad in space.fixed else f"model.{bad}"
            raise SweepConfigError(f"{key} is invalid for {model_name}: {error}") from None
    for name, dist in space.distributions.items():
        for what, value in _bounds(dist):
            try:
                check(name, value)
            except (ValueError, TypeError) as error:
                raise SweepConfigError(
                    f"search_space.{name}={expressions.get(name)!r} {what} {value!r}, outside "
                    f"what {model_name} accepts: {error}; narrow the range"
                ) from None


def check_protocol(protocol: Mapping[str, Any], *, test_users: bool = False) -> None:
    """Check the protocol's parameters before the data is loaded.

    Args:
        protocol: The resolved `cfg.protocol`.
        test_users: Also require test users (the benchmark scores them).

    Raises:
        SweepConfigError: Naming `protocol.<key>`, its value and the allowed values.
    """
    from harness.data.protocol import _normalised_params

    try:
        params = _normalised_params(**dict(protocol))
    except (ValueError, TypeError) as error:
        raise SweepConfigError(f"protocol: {error}") from None
    except KeyError as error:
        raise SweepConfigError(f"protocol.{error.args[0]} is missing; set it") from None
    needed = ("n_val_users", "n_test_users") if test_users else ("n_val_users",)
    for key in needed:
        if params.get(key, 1) == 0:  # with protocol.folds the folds are the test users
            use = "choose configurations by" if key == "n_val_users" else "score models on"
            raise SweepConfigError(
                f"protocol.{key}=0: the harness needs these users to {use}; use a count >= 1 "
                f"or a fraction in (0, 1), e.g. protocol.{key}=100 or protocol.{key}=0.1"
            )


def check_overrides(
    model_name: str,
    overridden: Mapping[str, Any],
    space: SearchSpace,
    expressions: Mapping,
    *,
    prefix: tuple[str, str] | None = None,
) -> None:
    """Refuse command-line overrides of model keys the search space samples (they would be
    ignored by every trial).

    Args:
        overridden: Model keys set on the command line, with their values.
        prefix: (model key, search-space key) prefixes in the message; None = harness-sweep's
            ("model", "search_space"); a run's: ("models.<name>", "search_spaces.<name>").

    Raises:
        SweepConfigError: Naming both keys and both fixes.
    """
    model_key, space_key = prefix or ("model", "search_space")
    for name, value in overridden.items():
        if name in space.distributions:
            raise SweepConfigError(
                f"{model_key}.{name}={value!r} is set, but {space_key}.{name}="
                f"{expressions.get(name)!r} samples it for {model_name}, so the fixed value "
                f"would be ignored; either drop {model_key}.{name}, or fix it in the space with "
                f"{space_key}.{name}={value!r} (or remove it from the space with "
                f"'~{space_key}.{name}')"
            )
