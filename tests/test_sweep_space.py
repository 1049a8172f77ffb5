"""Search-space parsing (Hydra Optuna Sweeper syntax) and its bad-input errors."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from harness.sweep import SweepConfigError, parse_search_space
from harness.sweep.space import default_trial_params, grid_values, parse_expression

PARAMS = {"beta", "latent_dim", "learning_rate", "batch_size", "output_activation", "lam"}
DEFAULTS = {"beta": 1.0, "latent_dim": 70, "learning_rate": 1e-3, "batch_size": 100, "lam": 500.0}


def parse(space: dict) -> object:
    return parse_search_space(space, model_name="m", param_names=PARAMS, defaults=DEFAULTS)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("interval(0.05, 0.5)", FloatDistribution(0.05, 0.5)),
        ("tag(log, interval(1e-4, 1e-2))", FloatDistribution(1e-4, 1e-2, log=True)),
        ("choice(0.1, 0.2)", CategoricalDistribution([0.1, 0.2])),
        ("range(0.1, 0.4, 0.1)", CategoricalDistribution([0.1, 0.2, 0.3])),
    ],
)
def test_float_parameter_expressions(expression: str, expected: object) -> None:
    assert parse({"beta": expression}).distributions["beta"] == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # Hydra reads interval bounds as floats; the int default makes the interval integer.
        ("interval(16, 256)", IntDistribution(16, 256)),
        ("tag(log, interval(16, 256))", IntDistribution(16, 256, log=True)),
        # range stops are exclusive, as in Python: range(50, 301, 50) ends at 300.
        ("range(50, 301, 50)", IntDistribution(50, 300, step=50)),
        ("range(8, 12)", IntDistribution(8, 11)),
        ("choice(35, 70, 140)", CategoricalDistribution([35, 70, 140])),
        ("shuffle(range(1, 4))", CategoricalDistribution([1, 2, 3])),
    ],
)
def test_integer_parameter_expressions(expression: str, expected: object) -> None:
    assert parse({"latent_dim": expression}).distributions["latent_dim"] == expected


def test_plain_values_are_fixed_params() -> None:
    space = parse({"beta": 0.2, "output_activation": "sigmoid", "latent_dim": "64"})
    assert space.distributions == {}
    assert space.fixed == {"beta": 0.2, "output_activation": "sigmoid", "latent_dim": 64}


def test_string_choices_and_empty_space() -> None:
    space = parse({"output_activation": "choice(softmax, sigmoid)"})
    assert space.distributions["output_activation"].choices == ("softmax", "sigmoid")
    empty = parse({})
    assert empty.distributions == {} and empty.fixed == {}


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"beta": "interval(0.05,"}, "search_space.beta: cannot parse"),
        ({"beta": "interval(0.5, 0.05)"}, "low 0.5 > high 0.05; swap the bounds"),
        ({"learning_rate": "tag(log, interval(0, 0.1))"}, "low=0.0 <= 0; use a positive"),
        ({"learning_rate": "tag(log, interval(-1, 0.1))"}, "search_space.learning_rate"),
        ({"latent_dim": "interval(1.5, 9)"}, "integer but"),
        ({"latent_dim": "range(10, 5)"}, "is empty"),
        ({"beta": "tag(lg, interval(0.1, 1))"}, "unknown tag"),
        ({"beta": "tag(log, choice(0.1, 1))"}, "only applies to interval"),
        ({"betta": "interval(0.1, 1)"}, "model 'm' has no parameter 'betta'"),
    ],
)
def test_bad_search_spaces_name_the_key_and_the_fix(space: dict, message: str) -> None:
    with pytest.raises(SweepConfigError, match=message.replace("(", r"\(")) as info:
        parse(space)
    assert f"search_space.{next(iter(space))}" in str(info.value)


def test_unknown_parameter_lists_valid_ones_and_the_removal_syntax() -> None:
    with pytest.raises(SweepConfigError) as info:
        parse({"foo": 1})
    assert "latent_dim" in str(info.value) and "'~search_space.foo'" in str(info.value)


def test_real_models_and_unknown_model() -> None:
    space = parse_search_space({"lam": "tag(log, interval(1, 1e5))"}, model_name="ease")
    assert space.distributions["lam"] == FloatDistribution(1.0, 1e5, log=True)
    with pytest.raises(SweepConfigError, match="unknown model 'vae9'; use one of"):
        parse_search_space({}, model_name="vae9")
    with pytest.raises(SweepConfigError, match="no parameter 'latent_dim'"):
        parse_search_space({"latent_dim": "interval(2, 8)"}, model_name="ease")


def test_default_trial_params_keep_only_defaults_inside_the_space() -> None:
    space = parse({"latent_dim": "choice(4, 8)", "beta": "interval(0.1, 1.0)", "lam": 3.0})
    assert default_trial_params(space, DEFAULTS) == {"beta": 1.0}


def test_grid_values_need_a_finite_space() -> None:
    assert grid_values("k", IntDistribution(1, 7, step=3)) == [1, 4, 7]
    with pytest.raises(SweepConfigError, match="sweep.sampler=grid needs a finite space"):
        grid_values("search_space.beta", FloatDistribution(0.0, 1.0))


def test_parse_expression_passes_non_strings_through() -> None:
    assert parse_expression("search_space.x", [1, 2]) == [1, 2]
    assert parse_expression("search_space.x", "null") is None
