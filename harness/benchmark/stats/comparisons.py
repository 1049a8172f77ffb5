"""One benchmark's comparisons from per-user values (n_seeds, n_users): a model's mean with its
interval (`model_interval`), a model against the baseline (`compare`) and the verdict in
words, Holm's correction over a family of tests; also the plain helpers for independent
values (`mean_ci`) and the signed-rank test kept for older reports (`paired_wilcoxon`).
Incomplete users and diverged runs are dropped here; the arithmetic is in
``harness.benchmark.stats.components``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from harness.benchmark.stats.components import (
    check_seeds,
    clean_runs,
    compare_batch,
    complete_users,
    interval_batch,
    kept_folds,
)
from harness.benchmark.stats.settings import METHOD, POWER, StatsSettings


@dataclass(frozen=True)
class MeanCI:
    """A mean with a two-sided confidence interval.

    Attributes:
        mean: sample mean of the finite values.
        low: lower bound of the interval (NaN when fewer than two finite values).
        high: upper bound of the interval (NaN when fewer than two finite values).
        n: number of finite values the interval is based on.
        confidence: the interval's coverage, e.g. 0.95.
        se: standard error of the mean (NaN when unknown).
        df: degrees of freedom of the t quantile (NaN when unknown; inf for a zero se).
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95
    se: float = float("nan")
    df: float = float("nan")

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN when the interval is undefined)."""
        return (self.high - self.low) / 2.0


def mean_ci(values: np.ndarray | list[float], confidence: float = 0.95) -> MeanCI:
    """Mean and Student-t confidence interval of independent values (e.g. one per seed).

    NaNs are dropped first. With one finite value the interval is undefined (NaN bounds)
    rather than a misleading zero-width interval; with none, the mean is NaN too. Identical
    values give a zero-width interval.

    Args:
        values: one value per independent replicate.
        confidence: two-sided coverage in (0, 1).

    Returns:
        The mean, the interval and the number of values used.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}: use e.g. 0.95")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0, confidence)
    mean = float(x.mean())
    if n == 1:
        return MeanCI(mean, float("nan"), float("nan"), 1, confidence)
    sem = float(x.std(ddof=1)) / np.sqrt(n)
    half = float(sps.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sem
    return MeanCI(mean, mean - half, mean + half, n, confidence, sem, float(n - 1))


@dataclass(frozen=True)
class PairedTest:
    """Result of a paired two-sided Wilcoxon signed-rank test.

    Attributes:
        statistic: the Wilcoxon statistic (NaN when the test could not run).
        p_value: two-sided p-value (1.0 when every pair is tied, NaN with no pairs).
        n_pairs: number of pairs where both values are finite.
        median_difference: median of a - b over those pairs.
    """

    statistic: float
    p_value: float
    n_pairs: int
    median_difference: float


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of paired values ``a`` vs ``b`` (e.g. per user).

    Pairs where either value is NaN are dropped (a user without held-out items). Zero
    differences are handled by scipy's default ``zero_method="wilcox"`` (dropped). When all
    differences are zero there is no evidence of a difference: p = 1.0.

    Args:
        a: values of the model under test, one per unit.
        b: values of the baseline for the same units, same order.

    Returns:
        Statistic, p-value, number of pairs used and the median difference.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(
            f"paired test needs equal lengths, got {a.size} and {b.size}: "
            "pass per-user values of the same test users in the same order"
        )
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    n = int(diff.size)
    if n == 0:
        return PairedTest(float("nan"), float("nan"), 0, float("nan"))
    median = float(np.median(diff))
    if not np.any(diff != 0):
        return PairedTest(float("nan"), 1.0, n, median)
    result = sps.wilcoxon(diff, alternative="two-sided")
    return PairedTest(float(result.statistic), float(result.pvalue), n, median)


def holm(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value
    is max over j <= i of min(1, (m - j + 1) * p_(j)); the running max keeps the adjusted
    values monotone, so "adjusted <= alpha" is exactly Holm's rejection rule. NaN inputs
    stay NaN and do not count towards m.

    Args:
        p_values: raw p-values of one family of tests.

    Returns:
        Adjusted p-values, same shape as the input.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p.ravel()))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p.ravel()[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p.ravel()[order])
    out.ravel()[order] = np.maximum.accumulate(scaled)
    return out


def model_interval(
    values: np.ndarray,
    *,
    stochastic: bool,
    settings: StatsSettings | None = None,
    confidence: float | None = None,
    folds: np.ndarray | None = None,
) -> MeanCI:
    """Mean and t-interval of one model's per-user values (n_seeds, n_users).

    Users without a value in every seed (NaN: no held-out item) are dropped; the mean is over
    the remaining users and all seeds. ``MeanCI.n`` is the number of users used, ``se`` and
    ``df`` the interval's standard error and Satterthwaite df. Liang's optimal-beta rows use
    this too (their test values over the procedure's seeds).

    Raises:
        StatsConfigError: a stochastic model with fewer than 2 seeds.
    """
    level = confidence if confidence is not None else (settings or StatsSettings()).confidence
    x = clean_runs(values)
    check_seeds(x, stochastic=stochastic)
    keep = complete_users(x)
    x = x[:, keep]
    fold_ids = kept_folds(folds, keep)
    n = int(x.shape[1])
    if n == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0, level)
    r = interval_batch(x[None], stochastic=stochastic, folds=fold_ids, confidence=level)
    return MeanCI(
        float(r.mean[0]),
        float(r.low[0]),
        float(r.high[0]),
        n,
        level,
        float(r.se[0]),
        float(r.df[0]),
    )


def model_intervals(
    metrics: Mapping[str, np.ndarray],
    *,
    stochastic: bool,
    settings: StatsSettings | None = None,
    folds: np.ndarray | None = None,
) -> dict[str, MeanCI]:
    """`model_interval` of each metric's per-user values of one model."""
    return {
        name: model_interval(values, stochastic=stochastic, settings=settings, folds=folds)
        for name, values in metrics.items()
    }


@dataclass(frozen=True)
class Comparison:
    """A model against the baseline on the same test users.

    Attributes:
        mean_difference: grand mean of the model minus the baseline's (test metric).
        ci_low, ci_high: t-interval of that difference (Satterthwaite df).
        p_value: two-sided p-value of "mean difference = 0" (t-test, unadjusted).
        se: standard error of the difference (users x seeds crossed variance components).
        mdd: minimum detectable difference: (t_{1-alpha/(2m), df} + t_{power, df}) * se, with
            m the number of comparisons (Holm's strictest level) and 80% power.
        n_users: users with finite values for both models.
        test: the method, "components".
        df: Satterthwaite degrees of freedom of ``se``.
        p_equivalence: TOST p-value of "|difference| >= margin" (unadjusted; 1 when the
            margin is 0).
        margin: the equivalence margin tested.
    """

    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    mdd: float
    n_users: int
    test: str = METHOD
    df: float = float("nan")
    p_equivalence: float = float("nan")
    margin: float = 0.0


def minimum_detectable_difference(
    se: float, alpha: float, df: float = math.inf, power: float = POWER
) -> float:
    """Smallest true difference a two-sided level-``alpha`` t-test with ``df`` detects with
    ``power``: (t_{1-alpha/2, df} + t_{power, df}) * se."""
    return float((sps.t.ppf(1.0 - alpha / 2.0, df) + sps.t.ppf(power, df)) * se)


def compare(
    model: np.ndarray,
    baseline: np.ndarray,
    *,
    model_stochastic: bool,
    baseline_stochastic: bool,
    settings: StatsSettings,
    n_comparisons: int = 1,
    folds: np.ndarray | None = None,
) -> Comparison:
    """Paired comparison of per-user values (n_seeds, n_users) of a model and the baseline.

    Users with a NaN for either model in any seed are dropped from both (pairwise); the
    rest go through `compare_batch` with batch 1 (the same code the calibration suite
    simulates). ``folds``: fold id per user column (user-level cross-validation: row s of
    fold k is that fold's own training run); see the module docstring for the assumption.

    A stochastic model with one seed leaves its seed variance unknown: the result then has the
    mean difference and NaN for everything else (`verdict` says why), rather than a test that
    ignores training noise.
    """
    a, b = clean_runs(model), clean_runs(baseline)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"paired comparison needs the same test users: {a.shape[1]} vs {b.shape[1]} columns"
        )
    keep = complete_users(a, b)
    a, b = a[:, keep], b[:, keep]
    fold_ids = kept_folds(folds, keep)
    n = int(a.shape[1])
    nan = float("nan")
    if n == 0:
        return Comparison(nan, nan, nan, nan, nan, nan, 0, METHOD, nan, nan, settings.margin)
    if (model_stochastic and a.shape[0] < 2) or (baseline_stochastic and b.shape[0] < 2):
        diff = float(a.mean() - b.mean())
        return Comparison(diff, nan, nan, nan, nan, nan, n, METHOD, nan, nan, settings.margin)
    r = compare_batch(
        a[None],
        b[None],
        model_stochastic=model_stochastic,
        baseline_stochastic=baseline_stochastic,
        folds=fold_ids,
        confidence=settings.confidence,
        margin=settings.margin,
        n_comparisons=n_comparisons,
    )
    return Comparison(
        mean_difference=float(r.mean_difference[0]),
        ci_low=float(r.ci_low[0]),
        ci_high=float(r.ci_high[0]),
        p_value=float(r.p_value[0]),
        se=float(r.se[0]),
        mdd=float(r.mdd[0]),
        n_users=n,
        test=METHOD,
        df=float(r.df[0]),
        p_equivalence=float(r.p_equivalence[0]),
        margin=float(settings.margin),
    )


def verdict(
    comparison: Comparison,
    p_holm: float,
    *,
    margin: float,
    alpha: float,
    n_users: int,
    p_equivalence_holm: float | None = None,
) -> str:
    """The comparison in words.

    "better"/"worse" when the Holm-adjusted p-value is below alpha; "equivalent within
    +-margin" when the Holm-adjusted TOST p-value (``p_equivalence_holm``; default the
    comparison's own, i.e. a family of one) is below alpha; otherwise "not distinguishable
    with N users" and the minimum detectable difference.
    """
    if math.isnan(comparison.mean_difference):
        return "no users to compare"
    if math.isnan(comparison.se):
        return "not testable: a stochastic model has one seed (use benchmark.n_seeds >= 2)"
    if p_holm < alpha:
        return "better" if comparison.mean_difference > 0 else "worse"
    p_eq = comparison.p_equivalence if p_equivalence_holm is None else p_equivalence_holm
    if margin > 0 and p_eq < alpha:
        return f"equivalent within ±{margin:g}"
    return f"not distinguishable with {n_users} users (detectable difference ±{comparison.mdd:.4f})"
