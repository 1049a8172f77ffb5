"""Statistics against hand-computed cases (CI, Holm) and scipy (Wilcoxon)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.benchmark.stats import holm, mean_ci, paired_wilcoxon


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
