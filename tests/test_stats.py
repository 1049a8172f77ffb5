"""Statistics against hand-computed cases (CI, Holm, permutation) and scipy (Wilcoxon,
bootstrap)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.benchmark.stats import (
    StatsConfigError,
    StatsSettings,
    bootstrap_ci,
    compare,
    holm,
    mean_ci,
    paired_wilcoxon,
    verdict,
)


def test_mean_ci_matches_hand_computed_t_interval():
    # mean 2, sd 1, sem 1/sqrt(3); t_{0.975, 2} = 4.302652729911275
    ci = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert ci.mean == pytest.approx(2.0)
    assert ci.low == pytest.approx(2.0 - half)
    assert ci.high == pytest.approx(2.0 + half)
    assert ci.half_width == pytest.approx(half)
    assert ci.n == 3


def test_mean_ci_drops_nan_and_handles_degenerate_inputs():
    assert mean_ci([1.0, np.nan, 3.0]).n == 2
    one = mean_ci([0.4])
    assert one.mean == 0.4 and math.isnan(one.low) and math.isnan(one.high)
    none = mean_ci([np.nan])
    assert none.n == 0 and math.isnan(none.mean)
    same = mean_ci([0.3, 0.3, 0.3])
    assert same.low == pytest.approx(0.3) and same.high == pytest.approx(0.3)
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)


def test_holm_matches_hand_computed_case():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_keeps_nan_and_single_test_unchanged():
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])
    out = holm([0.02, np.nan, 0.04])
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.04, 0.04])
    np.testing.assert_allclose(holm([0.2]), [0.2])
    assert holm([]).shape == (0,)


def test_paired_wilcoxon_matches_scipy_and_drops_nan_pairs():
    rng = np.random.default_rng(0)
    a = rng.random(40)
    b = a - 0.05 + 0.1 * rng.random(40)
    a_nan = np.append(a, np.nan)
    b_nan = np.append(b, 0.5)
    result = paired_wilcoxon(a_nan, b_nan)
    expected = sps.wilcoxon(a - b)
    assert result.n_pairs == 40
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.median_difference == pytest.approx(np.median(a - b))


def test_paired_wilcoxon_hand_case_and_ties():
    # all five differences positive: exact two-sided p = 2 / 2**5
    result = paired_wilcoxon(np.arange(1.0, 6.0), np.zeros(5))
    assert result.p_value == pytest.approx(0.0625)
    assert result.statistic == 0.0
    tied = paired_wilcoxon(np.ones(4), np.ones(4))
    assert tied.p_value == 1.0 and tied.n_pairs == 4
    assert math.isnan(paired_wilcoxon([np.nan], [1.0]).p_value)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_wilcoxon([1.0, 2.0], [1.0])


# --- two-way bootstrap, paired comparison, verdicts -------------------------------------------


def test_user_bootstrap_of_a_deterministic_model_matches_scipy_and_has_width():
    rng = np.random.default_rng(3)
    x = rng.random((1, 200))
    settings = StatsSettings(n_resamples=4000)
    ci = bootstrap_ci(x, stochastic=False, settings=settings)
    ref = sps.bootstrap(
        (x[0],), np.mean, method="percentile", n_resamples=4000, random_state=1
    ).confidence_interval
    assert ci.mean == pytest.approx(x.mean())
    assert ci.n == 200
    # two independent Monte Carlo estimates of the same percentiles
    assert ci.low == pytest.approx(ref.low, abs=0.004)
    assert ci.high == pytest.approx(ref.high, abs=0.004)
    assert ci.high - ci.low > 0.05  # sd 0.29 / sqrt(200) * 2 * 1.96 ~ 0.08


def test_seed_noise_widens_the_interval_and_is_reproducible():
    rng = np.random.default_rng(4)
    users = rng.random(100)
    shifts = np.array([-0.05, 0.0, 0.05, -0.03, 0.03])[:, None]  # big seed-to-seed noise
    runs = users[None, :] + shifts
    settings = StatsSettings()
    nested = bootstrap_ci(runs, stochastic=True, settings=settings)
    users_only = bootstrap_ci(runs, stochastic=False, settings=settings)
    assert nested.high - nested.low > users_only.high - users_only.low + 0.01
    again = bootstrap_ci(runs, stochastic=True, settings=settings)
    assert (again.low, again.high) == (nested.low, nested.high)
    with pytest.raises(StatsConfigError, match="n_seeds >= 2"):
        bootstrap_ci(runs[:1], stochastic=True, settings=settings)


def test_users_with_nan_are_dropped_pairwise():
    x = np.array([[0.1, np.nan, 0.3, 0.5], [0.2, np.nan, 0.4, 0.6]])
    ci = bootstrap_ci(x, stochastic=True, settings=StatsSettings())
    assert ci.n == 3 and ci.mean == pytest.approx(np.mean([0.1, 0.3, 0.5, 0.2, 0.4, 0.6]))


def test_paired_difference_ci_p_value_and_permutation_agree_with_a_clear_effect():
    rng = np.random.default_rng(5)
    base = rng.random((1, 300))
    better = base + 0.03 + rng.normal(0, 0.02, (3, 300))
    for test in ("bootstrap", "permutation"):
        c = compare(
            better,
            base,
            model_stochastic=True,
            baseline_stochastic=False,
            settings=StatsSettings(test=test),
        )
        assert c.mean_difference == pytest.approx(better.mean() - base.mean())
        assert 0.02 < c.ci_low < c.mean_difference < c.ci_high < 0.04
        assert c.p_value < 0.001 and c.n_users == 300 and c.test == test
    assert verdict(c, 0.0005, margin=0.01, alpha=0.05, n_users=300) == "better"


def test_permutation_p_value_is_exact_for_a_hand_case():
    # five users, every difference +1: sign flips give 2 of 32 outcomes as extreme -> p = 1/16
    a, b = np.ones((1, 5)), np.zeros((1, 5))
    c = compare(
        a,
        b,
        model_stochastic=False,
        baseline_stochastic=False,
        settings=StatsSettings(test="permutation"),
    )
    assert c.p_value == pytest.approx(0.0625)


def test_verdict_equivalence_needs_the_interval_inside_the_margin():
    rng = np.random.default_rng(6)
    base = rng.random((1, 2000))
    same = base + rng.normal(0, 0.01, (1, 2000))  # tiny noise, many users: narrow interval
    c = compare(
        same, base, model_stochastic=False, baseline_stochastic=False, settings=StatsSettings()
    )
    assert c.ci_high - c.ci_low < 0.002
    assert verdict(c, 0.9, margin=0.01, alpha=0.05, n_users=2000) == "equivalent within ±0.01"
    few = compare(
        base[:, :20] + rng.normal(0, 0.2, (1, 20)),
        base[:, :20],
        model_stochastic=False,
        baseline_stochastic=False,
        settings=StatsSettings(),
    )
    text = verdict(few, 0.9, margin=0.01, alpha=0.05, n_users=20)
    assert text.startswith("not distinguishable with 20 users (detectable difference ±")
    assert few.mdd > 0.05  # 20 noisy users cannot resolve 0.01
    assert verdict(c, 0.9, margin=0.0, alpha=0.05, n_users=2000).startswith("not distinguish")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": "t"}, "interval='t' is unknown"),
        ({"test": "wilcoxon"}, "test='wilcoxon' is unknown"),
        ({"margin": -1.0}, "margin=-1.0 is negative"),
        ({"margin": float("nan")}, "finite"),
        ({"confidence": 95}, "confidence=95"),
        ({"n_resamples": 50}, "too few"),
    ],
)
def test_bad_stats_settings_name_the_key(kwargs, message):
    with pytest.raises(StatsConfigError, match=message):
        StatsSettings(**kwargs)
