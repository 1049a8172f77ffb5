"""Statistics for comparing models over seeds and users: t confidence intervals, paired
Wilcoxon signed-rank tests and Holm's step-down correction.

Kept free of TensorFlow and plotting so that reports and tests import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class MeanCI:
    """A mean with a two-sided confidence interval.

    Attributes:
        mean: sample mean of the finite values.
        low: lower bound of the interval (NaN when fewer than two finite values).
        high: upper bound of the interval (NaN when fewer than two finite values).
        n: number of finite values the interval is based on.
        confidence: the interval's coverage, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

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
    return MeanCI(mean, mean - half, mean + half, n, confidence)


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
