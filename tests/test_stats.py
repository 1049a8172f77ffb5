"""Statistics against hand-computed cases (CI, Holm, variance components) and scipy (t-tests,
Wilcoxon). Calibration by simulation: tests/test_stats_calibration.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.benchmark.stats import (
    Comparison,
    StatsConfigError,
    StatsSettings,
    VarianceComponents,
    compare,
    compare_batch,
    detectable_difference,
    holm,
    interval_batch,
    mean_ci,
    model_interval,
    paired_wilcoxon,
    users_needed,
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


# --- variance components (users x seeds crossed), paired comparison, verdicts ----------------


def _reference_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Loop-by-loop reference of the paired difference's variance and df (both stochastic,
    one fold): Var = max(s_d^2/n - sum MS_E/(n S), 0) + MS_S(pooled) * sum 1/(n S)."""
    n = a.shape[1]

    def anova(x):
        s = x.shape[0]
        g = x.mean()
        um = [x[:, u].mean() for u in range(n)]
        sm = [x[i].mean() for i in range(s)]
        ms_s = n * sum((m - g) ** 2 for m in sm) / (s - 1)
        ss_e = sum((x[i, u] - um[u] - sm[i] + g) ** 2 for i in range(s) for u in range(n))
        return ms_s, ss_e / ((s - 1) * (n - 1)), s

    (sa, ea, na), (sb, eb, nb) = anova(a), anova(b)
    d = [a[:, u].mean() - b[:, u].mean() for u in range(n)]
    s_d2 = float(np.var(d, ddof=1))
    g_terms = [
        (s_d2 / n, n - 1),
        (-ea / (n * na), (na - 1) * (n - 1)),
        (-eb / (n * nb), (nb - 1) * (n - 1)),
    ]
    g = sum(t for t, _ in g_terms)
    df_s = (na - 1) + (nb - 1)
    pooled = ((na - 1) * sa + (nb - 1) * sb) / df_s
    seed = (pooled * (1 / (n * na) + 1 / (n * nb)), df_s)
    terms = ([*g_terms] if g > 0 else []) + [seed]
    var = sum(t for t, _ in terms)
    df = var**2 / sum(t**2 / k for t, k in terms)
    return float(np.mean(d)), var, df


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_difference_matches_the_loop_reference(seed):
    rng = np.random.default_rng(seed)
    user = rng.random(30)
    a = user + rng.normal(0, 0.01, (4, 1)) + rng.normal(0, 0.05, (4, 30))
    b = user + rng.normal(0, 0.01, (3, 1)) + rng.normal(0, 0.05 * (seed + 1), (3, 30))
    diff, var, df = _reference_difference(a, b)
    c = compare(a, b, model_stochastic=True, baseline_stochastic=True, settings=StatsSettings())
    assert c.mean_difference == pytest.approx(diff)
    assert c.se == pytest.approx(math.sqrt(var))
    assert c.df == pytest.approx(df)
    half = sps.t.ppf(0.975, df) * math.sqrt(var)
    assert (c.ci_low, c.ci_high) == pytest.approx((diff - half, diff + half))
    assert c.p_value == pytest.approx(2 * sps.t.sf(abs(diff) / math.sqrt(var), df))
    assert c.test == "components" and c.n_users == 30


def test_two_deterministic_models_give_the_paired_t_test():
    rng = np.random.default_rng(7)
    a, b = rng.random((1, 50)), rng.random((1, 50))
    c = compare(a, b, model_stochastic=False, baseline_stochastic=False, settings=StatsSettings())
    ref = sps.ttest_rel(a[0], b[0])
    ci = ref.confidence_interval(0.95)
    assert c.p_value == pytest.approx(ref.pvalue)
    assert c.df == pytest.approx(49)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high))


def test_deterministic_model_interval_is_the_one_sample_t_interval():
    rng = np.random.default_rng(3)
    x = rng.random((1, 200))
    ci = model_interval(x, stochastic=False, settings=StatsSettings())
    ref = sps.ttest_1samp(x[0], 0.0).confidence_interval(0.95)
    assert ci.mean == pytest.approx(x.mean()) and ci.n == 200 and ci.df == pytest.approx(199)
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high))


def test_stochastic_model_interval_by_hand_and_seed_noise_widens_it():
    rng = np.random.default_rng(4)
    users = rng.random(100)
    shifts = np.array([-0.05, 0.0, 0.05, -0.03, 0.03])[:, None]  # big seed-to-seed noise
    runs = users[None, :] + shifts + rng.normal(0, 0.01, (5, 100))
    s, n = runs.shape
    um, sm, g = runs.mean(0), runs.mean(1), runs.mean()
    ms_u = s * ((um - g) ** 2).sum() / (n - 1)
    ms_s = n * ((sm - g) ** 2).sum() / (s - 1)
    ms_e = ((runs - um - sm[:, None] + g) ** 2).sum() / ((s - 1) * (n - 1))
    terms = [(ms_u / (n * s), n - 1), (-ms_e / (n * s), (s - 1) * (n - 1)), (ms_s / (n * s), s - 1)]
    var = sum(t for t, _ in terms)
    df = var**2 / sum(t**2 / k for t, k in terms)
    crossed = model_interval(runs, stochastic=True, settings=StatsSettings())
    assert crossed.se == pytest.approx(math.sqrt(var)) and crossed.df == pytest.approx(df)
    assert crossed.high - crossed.mean == pytest.approx(sps.t.ppf(0.975, df) * math.sqrt(var))
    users_only = model_interval(runs, stochastic=False, settings=StatsSettings())
    assert crossed.high - crossed.low > users_only.high - users_only.low + 0.01
    with pytest.raises(StatsConfigError, match="n_seeds >= 2"):
        model_interval(runs[:1], stochastic=True, settings=StatsSettings())


def test_users_with_nan_are_dropped_pairwise():
    x = np.array([[0.1, np.nan, 0.3, 0.5], [0.2, np.nan, 0.4, 0.6]])
    ci = model_interval(x, stochastic=True)
    assert ci.n == 3 and ci.mean == pytest.approx(np.mean([0.1, 0.3, 0.5, 0.2, 0.4, 0.6]))
    y = np.array([[0.2, 0.1, np.nan, 0.5], [0.3, 0.2, 0.4, 0.6]])
    c = compare(x, y, model_stochastic=True, baseline_stochastic=True, settings=StatsSettings())
    ref = compare(
        x[:, [0, 3]],
        y[:, [0, 3]],
        model_stochastic=True,
        baseline_stochastic=True,
        settings=StatsSettings(),
    )
    assert c.n_users == 2 and c.mean_difference == pytest.approx(ref.mean_difference)
    assert c.se == pytest.approx(ref.se)


def test_compare_is_compare_batch_with_batch_one():
    rng = np.random.default_rng(8)
    a = rng.normal(0, 1, (6, 5, 40)) + rng.normal(0, 0.3, (6, 5, 1))
    b = rng.normal(0, 1, (6, 1, 40))
    folds = np.repeat([3, 1], 20)
    batch = compare_batch(
        a,
        b,
        model_stochastic=True,
        baseline_stochastic=False,
        folds=folds,
        margin=0.2,
        n_comparisons=3,
    )
    settings = StatsSettings(margin=0.2)
    for i in range(6):
        c = compare(
            a[i],
            b[i],
            model_stochastic=True,
            baseline_stochastic=False,
            settings=settings,
            n_comparisons=3,
            folds=folds,
        )
        got = (
            c.mean_difference,
            c.se,
            c.df,
            c.ci_low,
            c.ci_high,
            c.p_value,
            c.p_equivalence,
            c.mdd,
        )
        want = tuple(
            float(getattr(batch, k)[i])
            for k in (
                "mean_difference",
                "se",
                "df",
                "ci_low",
                "ci_high",
                "p_value",
                "p_equivalence",
                "mdd",
            )
        )
        assert got == pytest.approx(want)


def test_clear_effect_is_better_and_mdd_uses_t_quantiles():
    rng = np.random.default_rng(5)
    base = rng.random((1, 300))
    better = base + 0.03 + rng.normal(0, 0.002, (3, 1)) + rng.normal(0, 0.02, (3, 300))
    c = compare(
        better,
        base,
        model_stochastic=True,
        baseline_stochastic=False,
        settings=StatsSettings(),
        n_comparisons=3,
    )
    assert c.mean_difference == pytest.approx(better.mean() - base.mean())
    assert 0.02 < c.ci_low < c.mean_difference < c.ci_high < 0.04
    assert c.p_value < 0.001 and c.n_users == 300
    assert c.mdd == pytest.approx((sps.t.ppf(1 - 0.05 / 6, c.df) + sps.t.ppf(0.8, c.df)) * c.se)
    assert verdict(c, 0.0005, margin=0.01, alpha=0.05, n_users=300) == "better"


def test_folds_condition_on_each_folds_training_set():
    # a constant shift per fold (its training set) does not count as noise; rows are that
    # fold's own runs, so the seed terms come from within-fold seed means
    rng = np.random.default_rng(9)
    folds = np.repeat(np.arange(4), 50)
    a = rng.normal(0, 0.05, (5, 200)) + rng.normal(0, 0.01, (5, 4))[:, folds]
    b = rng.normal(0, 0.05, (5, 200)) + rng.normal(0, 0.01, (5, 4))[:, folds]
    settings = StatsSettings()
    kw = dict(model_stochastic=True, baseline_stochastic=True, settings=settings)
    plain = compare(a, b, folds=folds, **kw)
    shifted = compare(a + np.array([0.1, -0.1, 0.2, 0.0])[folds], b, folds=folds, **kw)
    assert shifted.se == pytest.approx(plain.se)
    assert plain.df > 16  # seed df pooled over folds: 4 folds x 2 models x 4
    one = compare(a, b, folds=np.zeros(200), **kw)
    assert one.se == pytest.approx(compare(a, b, **kw).se)
    ci = model_interval(a, stochastic=True, folds=folds)
    assert ci.df > 16 and ci.low < a.mean() < ci.high
    with pytest.raises(ValueError, match="one fold id per user"):
        compare(a, b, folds=folds[:10], **kw)


def test_interval_batch_matches_model_interval():
    rng = np.random.default_rng(10)
    x = rng.normal(0, 1, (3, 4, 25))
    r = interval_batch(x, stochastic=True)
    for i in range(3):
        ci = model_interval(x[i], stochastic=True)
        assert (ci.mean, ci.low, ci.high) == pytest.approx((r.mean[i], r.low[i], r.high[i]))


def test_equivalence_is_a_tost_and_verdicts_read_right():
    rng = np.random.default_rng(6)
    base = rng.random((1, 2000))
    same = base + rng.normal(0, 0.01, (1, 2000))  # tiny noise, many users: narrow interval
    s = StatsSettings()
    c = compare(same, base, model_stochastic=False, baseline_stochastic=False, settings=s)
    t = (c.mean_difference - 0.01) / c.se, (c.mean_difference + 0.01) / c.se
    assert c.p_equivalence == pytest.approx(max(sps.t.cdf(t[0], c.df), sps.t.sf(t[1], c.df)))
    assert c.p_equivalence < 1e-6
    assert verdict(c, 0.9, margin=0.01, alpha=0.05, n_users=2000) == "equivalent within ±0.01"
    # Holm-adjusted TOST p-value decides when given
    text = verdict(c, 0.9, margin=0.01, alpha=0.05, n_users=2000, p_equivalence_holm=0.06)
    assert text.startswith("not distinguishable with 2000 users")
    few = compare(
        base[:, :20] + rng.normal(0, 0.2, (1, 20)),
        base[:, :20],
        model_stochastic=False,
        baseline_stochastic=False,
        settings=s,
    )
    text = verdict(few, 0.9, margin=0.01, alpha=0.05, n_users=20)
    assert text.startswith("not distinguishable with 20 users (detectable difference ±")
    assert few.mdd > 0.05  # 20 noisy users cannot resolve 0.01
    zero = compare(
        same,
        base,
        model_stochastic=False,
        baseline_stochastic=False,
        settings=StatsSettings(margin=0.0),
    )
    assert zero.p_equivalence == 1.0
    assert verdict(zero, 0.9, margin=0.0, alpha=0.05, n_users=2000).startswith("not distinguish")
    one_seed = compare(
        same[:, :50], base[:, :50], model_stochastic=True, baseline_stochastic=False, settings=s
    )
    assert np.isfinite(one_seed.mean_difference) and math.isnan(one_seed.p_value)
    text = verdict(one_seed, one_seed.p_value, margin=0.01, alpha=0.05, n_users=50)
    assert text.startswith("not testable: a stochastic model has one seed")
    nan = Comparison(*[float("nan")] * 6, 0)
    assert verdict(nan, float("nan"), margin=0.01, alpha=0.05, n_users=0) == "no users to compare"


def test_identical_values_give_zero_width_and_p_one():
    x = np.tile(np.linspace(0, 1, 10), (3, 1))
    c = compare(x, x, model_stochastic=True, baseline_stochastic=True, settings=StatsSettings())
    assert c.mean_difference == 0 and c.se == 0 and c.p_value == 1.0
    assert c.ci_low == c.ci_high == 0 and c.p_equivalence == 0.0


def test_variance_components_recover_a_simulation_and_plan_users():
    rng = np.random.default_rng(11)
    n, s = 4000, 8
    user = rng.normal(0, 0.2, n)
    a = user + rng.normal(0, 0.01, (s, 1)) + rng.normal(0, 0.05, (s, n)) + rng.normal(0, 0.03, n)
    b = user + rng.normal(0, 0.01, (s, 1)) + rng.normal(0, 0.05, (s, n))
    c = VarianceComponents.estimate(a, b)
    assert c.residual == pytest.approx(0.05**2, rel=0.05)
    assert c.user_model == pytest.approx(0.03**2, rel=0.15)
    assert c.user == pytest.approx(0.2**2, rel=0.15)
    assert 0 <= c.seed < 0.001
    stated = VarianceComponents(seed=1e-5, residual=0.01, user_model=0.002)
    kw = dict(n_seeds_model=5, n_seeds_baseline=5, alpha=0.05, n_comparisons=3)
    mdd = detectable_difference(stated, n_users=np.array([100, 400, 1600]), **kw)
    assert mdd[0] > mdd[1] > mdd[2] > 0
    need = users_needed(stated, margin=0.01, **kw)
    assert detectable_difference(stated, n_users=need, **kw) <= 0.01
    assert detectable_difference(stated, n_users=need - 1, **kw) > 0.01
    # a seed variance too large for the margin: no number of users helps
    assert users_needed(VarianceComponents(1e-3, 0.01, 0.0), margin=0.01, **kw) is None
    # folds multiply the runs (each fold trains its own): with this seed variance 5 seeds on
    # one split cannot resolve 0.01 however many users, 5 folds x 5 seeds can
    noisy = VarianceComponents(seed=2e-5, residual=0.01, user_model=0.001)
    assert users_needed(noisy, margin=0.01, **kw) is None
    assert users_needed(noisy, margin=0.01, n_folds=5, **kw) < 5000
    det = detectable_difference(
        stated, n_users=400, n_seeds_model=5, n_seeds_baseline=1, baseline_stochastic=False
    )
    assert det < detectable_difference(stated, n_users=400, n_seeds_model=5, n_seeds_baseline=5)
    with pytest.raises(StatsConfigError, match=">= 2 seeds"):
        detectable_difference(stated, n_users=100, n_seeds_model=1, n_seeds_baseline=5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": "t"}, "interval='t' is unknown"),
        ({"test": "wilcoxon"}, "test='wilcoxon' is unknown"),
        ({"test": "permutation"}, "test='permutation' was removed: .*ignores the variance"),
        ({"test": "bootstrap"}, "test='bootstrap' was removed: .*anti-conservative"),
        ({"interval": "bootstrap"}, "interval='bootstrap' was removed"),
        ({"interval": "t_seeds"}, "interval='t_seeds' was removed: .*test users"),
        ({"margin": -1.0}, "margin=-1.0 is negative"),
        ({"margin": float("nan")}, "finite"),
        ({"confidence": 95}, "confidence=95"),
        ({"n_resamples": 50}, "too few"),
    ],
)
def test_bad_stats_settings_name_the_key(kwargs, message):
    with pytest.raises(StatsConfigError, match=message):
        StatsSettings(**kwargs)


def test_summary_holm_adjusts_the_tost_in_the_same_family():
    from harness.benchmark.summary import ModelRun, tests_frame

    rng = np.random.default_rng(12)
    user = rng.random(400)
    runs = [ModelRun("base", {"ndcg@100": user + rng.normal(0, 0.02, (5, 400))})]
    for i, shift in enumerate([0.0, 0.003, 0.006]):
        values = user + shift + rng.normal(0, 0.02, (5, 400))
        runs.append(ModelRun(f"m{i}", {"ndcg@100": values}))
    frame = tests_frame(runs, baseline="base", stats=StatsSettings(margin=0.01))
    np.testing.assert_allclose(frame["p_equivalence_holm"], holm(frame["p_equivalence"]))
    np.testing.assert_allclose(frame["p_holm"], holm(frame["p_value"]))
    for _, row in frame.iterrows():
        equivalent = row["p_holm"] >= 0.05 and row["p_equivalence_holm"] < 0.05
        assert (row["verdict"] == "equivalent within ±0.01") == equivalent
    assert set(frame["test"]) == {"components"} and (frame["df"] > 0).all()
