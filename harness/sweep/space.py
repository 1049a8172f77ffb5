"""Search spaces in the Hydra Optuna Sweeper syntax, parsed with Hydra's own override parser.

A search-space entry is `param: expression`. Expressions (as in hydra-optuna-sweeper):

- `choice(a, b, ...)`             -> CategoricalDistribution
- `range(start, stop[, step])`    -> IntDistribution(step) (stop exclusive, as in Python);
                                     float or shuffled ranges -> CategoricalDistribution
- `interval(low, high)`           -> FloatDistribution, or IntDistribution for integer params
- `tag(log, interval(low, high))` -> the same with log=True
- anything else (`0.5`, `softmax`) -> a fixed parameter value, not searched

Hydra parses `interval` bounds as floats, so whether an interval is integer-valued comes from the
type of the model's default value for that parameter (latent_dim=70 -> int).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from harness.compat.optuna import distribution_contains
from harness.sweep.settings import SweepConfigError

SYNTAX_HINT = (
    "write it in the Hydra Optuna Sweeper syntax, e.g. interval(0.05,0.5), "
    "tag(log, interval(1e-4,1e-2)), choice(100,200,400) or range(50,300,50)"
)


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search space.

    Attributes:
        distributions: Searched parameters -> Optuna distribution.
        fixed: Parameters given a plain value in the space: passed to every trial as is.
    """

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)


def parse_search_space(
    space: Mapping[str, Any],
    *,
    model_name: str,
    param_names: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    key_prefix: str = "search_space",
) -> SearchSpace:
    """Parse and validate a whole search space before any trial runs.

    Args:
        space: Parameter name -> expression string (or a plain, fixed value).
        model_name: Model the space belongs to; used in messages and to look up defaults.
        param_names: Parameters the model accepts; None = `harness.models.model_param_names`.
        defaults: The model's default parameters (decides int vs float intervals); None =
            `harness.models.model_defaults(model_name)` (its `conf/model/<name>.yaml`).
        key_prefix: Config path shown in error messages.

    Returns:
        The searched distributions and the fixed values. An empty space is valid (e.g.
        popularity): every trial then trains the same configuration.

    Raises:
        SweepConfigError: Naming the offending `search_space.<param>` key and the fix.
    """
    if param_names is None or defaults is None:
        from harness.models.registry import model_defaults, model_param_names, registered_models

        if model_name not in registered_models():
            raise SweepConfigError(
                f"unknown model {model_name!r}; use one of {', '.join(registered_models())}."
            )
        param_names = model_param_names(model_name) if param_names is None else param_names
        defaults = model_defaults(model_name) if defaults is None else defaults
    allowed = set(param_names)
    parsed = SearchSpace()
    for name, expression in space.items():
        key = f"{key_prefix}.{name}"
        if name not in allowed:
            raise SweepConfigError(
                f"{key}: model {model_name!r} has no parameter {name!r} (its parameters: "
                f"{', '.join(sorted(allowed))}); fix the spelling or drop it with "
                f"'~{key}' on the command line."
            )
        value = parse_expression(key, expression, default=defaults.get(name))
        if isinstance(value, BaseDistribution):
            parsed.distributions[name] = value
        else:
            parsed.fixed[name] = value
    return parsed


def parse_expression(key: str, expression: Any, *, default: Any = None) -> Any:
    """Parse one search-space value into a distribution, or return it as a fixed value.

    Args:
        key: Config path for messages (`search_space.beta`).
        expression: The value from the config; non-strings are fixed values.
        default: The model's default for this parameter; an int default makes intervals
            integer-valued.

    Raises:
        SweepConfigError: Unparseable expression, empty range, low > high, log with low <= 0.
    """
    if not isinstance(expression, str):
        return expression
    override = _parse_override(key, expression)
    if not override.is_sweep_override():
        return override.value()
    value = override.value()
    tags = set(getattr(value, "tags", set()))
    if tags - {"log"}:
        raise SweepConfigError(
            f"{key}: unknown tag(s) {sorted(tags - {'log'})} in {expression!r}; only "
            "tag(log, interval(low,high)) is understood."
        )
    if tags and not isinstance(value, IntervalSweep):
        raise SweepConfigError(
            f"{key}: the log tag only applies to interval(...), got {expression!r}; "
            "write tag(log, interval(low,high))."
        )
    if isinstance(value, IntervalSweep):
        return _interval(key, expression, value, integer=_is_int(default))
    if isinstance(value, RangeSweep):
        return _range(key, expression, value)
    assert isinstance(value, ChoiceSweep)
    return CategoricalDistribution(_choices(key, expression, override))


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """Ask `trial` for `name` through the public suggest API (works with FixedTrial too)."""
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(f"unsupported distribution for {name}: {distribution!r}")


def default_trial_params(space: SearchSpace, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The model's defaults for the searched parameters, for enqueueing as trial 0.

    Defaults that fall outside their distribution (e.g. a space that excludes the seed's
    latent_dim) are left out, so that parameter is sampled instead of forced out of range.
    """
    params = {}
    for name, distribution in space.distributions.items():
        if name not in defaults:
            continue
        if distribution_contains(distribution, defaults[name]):
            params[name] = defaults[name]
    return params


def grid_values(key: str, distribution: BaseDistribution) -> list[Any]:
    """The finite list of values of a discrete distribution (for the grid sampler)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    raise SweepConfigError(
        f"{key}: sweep.sampler=grid needs a finite space, but this is {distribution!r}; "
        "use choice(...) or range(...), or another sampler."
    )


def _parse_override(key: str, expression: str) -> Override:
    try:
        # The key is a placeholder: only the value grammar matters here, and real parameter
        # names are validated against the model separately.
        return OverridesParser.create().parse_overrides([f"x={expression}"])[0]
    except HydraException as error:
        reason = str(error).splitlines()[0]
        raise SweepConfigError(
            f"{key}: cannot parse {expression!r} ({reason}); {SYNTAX_HINT}."
        ) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _interval(key: str, text: str, value: IntervalSweep, *, integer: bool) -> BaseDistribution:
    low, high = value.start, value.end
    log = "log" in value.tags
    if low > high:
        raise SweepConfigError(f"{key}: {text!r} has low {low} > high {high}; swap the bounds.")
    if log and low <= 0:
        raise SweepConfigError(
            f"{key}: {text!r} is log-scaled but low={low} <= 0; use a positive lower bound "
            "(e.g. 1e-5) or drop the log tag."
        )
    if integer:
        if low != int(low) or high != int(high):
            raise SweepConfigError(
                f"{key}: this parameter is an integer but {text!r} has fractional bounds; "
                "use integer bounds."
            )
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _range(key: str, text: str, value: RangeSweep) -> BaseDistribution:
    start, stop, step = value.start, value.stop, value.step
    if step == 0:
        raise SweepConfigError(f"{key}: {text!r} has step 0; use a non-zero step.")
    # Counted, not accumulated: repeated float addition (0.1 + 0.1 + 0.1 < 0.4) would let
    # the exclusive stop value slip in, as it does in Hydra's own iterator.
    count = max(math.ceil((stop - start) / step - 1e-9), 0)
    values = [start + i * step for i in range(count)]
    if not values:
        raise SweepConfigError(
            f"{key}: {text!r} is empty (stop is exclusive, as in Python's range); "
            "make stop larger than start."
        )
    if all(_is_int(v) for v in (start, stop, step)) and step > 0 and not value.shuffle:
        return IntDistribution(start, values[-1], step=step)
    return CategoricalDistribution(sorted({round(v, 12) for v in values}))


def _choices(key: str, text: str, override: Override) -> list[Any]:
    choices = list(override.sweep_iterator())
    bad = [c for c in choices if not isinstance(c, str | int | float | bool | type(None))]
    if bad or not choices:
        raise SweepConfigError(
            f"{key}: {text!r} must list one or more scalar values (str, int, float, bool, "
            "null); nested lists or dicts cannot be searched."
        )
    return choices
