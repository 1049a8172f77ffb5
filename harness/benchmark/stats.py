"""Statistics for comparing models over test users and training seeds.

The benchmark's numbers come from per-user test values of shape (n_seeds, n_users): every
training seed of a model scored the same test users. Two sources of uncertainty: which users
happened to be test users, and (for iterative models) which seeds trained the model.

- `bootstrap_ci`: a two-way bootstrap: each replicate resamples the test users and, for a
  stochastic model, independently its seeds; the statistic is the mean over the resampled
  seeds of the mean over the resampled users; percentile interval. A deterministic model
  (one run) gets the user bootstrap alone, so no interval has zero width.
- `compare`: a model against the baseline on the same users: the paired mean difference,
  its two-way bootstrap interval (users resampled jointly, each model's seeds on their own),
  a two-sided p-value for that same mean difference (bootstrap, or a sign-flip permutation
  test on the per-user differences averaged over seeds, via `scipy.stats.permutation_test`),
  and the smallest difference this test could detect (80% power).
- `holm`: Holm's step-down correction over the models; `verdict` turns it into words,
  "equivalent within +-margin" only when the difference's interval lies inside the margin.
- `mean_ci`, `paired_wilcoxon`: the older seed-only t-interval and signed-rank test
  (`benchmark.interval=t_seeds` keeps the former for comparison; Liang's table uses it).

Every resampling draws from `numpy.random.default_rng(seed)`, so a report's numbers are
reproducible. Kept free of TensorFlow and plotting so that reports and tests import it cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from harness.errors import UserError

INTERVALS = ("bootstrap", "t_seeds", "none")
TESTS = ("bootstrap", "permutation")
POWER = 0.8  # of the minimum detectable difference
_CHUNK = 256  # bootstrap replicates computed at once: 256 x users counts in memory


class StatsConfigError(UserError, ValueError):
    """A statistics option is unknown, out of range or contradicts another one."""


@dataclass(frozen=True)
class StatsSettings:
    """How intervals and tests are computed (the `benchmark.*` statistics keys).

    Attributes:
        confidence: two-sided coverage of every interval; alpha = 1 - confidence is the
            level of the tests.
        interval: per-model interval: "bootstrap" (users nested with seeds, the default),
            "t_seeds" (Student t over seed means only: ignores test-user sampling, zero width
            for deterministic models; for comparison with older reports) or "none".
        test: p-value of the paired mean difference: "bootstrap" or "permutation" (sign-flip
            over users, seeds averaged first).
        n_resamples: bootstrap replicates / permutations (>= 100; 2000 by default).
        seed: seed of the resampling RNG (reports are reproducible).
        margin: equivalence margin on the test metric (e.g. 0.01 NDCG@100); >= 0, 0 = never
            claim equivalence.
    """

    confidence: float = 0.95
    interval: str = "bootstrap"
    test: str = "bootstrap"
    n_resamples: int = 2000
    seed: int = 0
    margin: float = 0.01

    def __post_init__(self) -> None:
        if not (isinstance(self.confidence, int | float) and 0.0 < self.confidence < 1.0):
            raise StatsConfigError(
                f"benchmark.confidence={self.confidence!r} must lie in (0, 1), e.g. 0.95"
            )
        if self.interval not in INTERVALS:
            raise StatsConfigError(
                f"benchmark.interval={self.interval!r} is unknown; use one of "
                f"{', '.join(INTERVALS)}"
            )
        if self.test not in TESTS:
            raise StatsConfigError(
                f"benchmark.test={self.test!r} is unknown; use one of {', '.join(TESTS)}"
            )
        if isinstance(self.n_resamples, bool) or not isinstance(self.n_resamples, int):
            raise StatsConfigError(f"benchmark.n_resamples={self.n_resamples!r} must be an integer")
        if self.n_resamples < 100:
            raise StatsConfigError(
                f"benchmark.n_resamples={self.n_resamples} is too few for a 2-sided "
                f"{self.confidence:.0%} interval; use >= 100 (default 2000)"
            )
        if not (isinstance(self.margin, int | float) and math.isfinite(self.margin)):
            raise StatsConfigError(f"benchmark.margin={self.margin!r} must be a finite number")
        if self.margin < 0:
            raise StatsConfigError(
                f"benchmark.margin={self.margin} is negative; it is a half-width: use e.g. "
                "0.01 (equivalent within +-0.01), or 0 to never claim equivalence"
            )

    @property
    def alpha(self) -> float:
        """Level of the tests: 1 - confidence."""
        return 1.0 - self.confidence


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


def complete_users(*arrays: np.ndarray) -> np.ndarray:
    """Boolean mask of the users (columns) finite in every row of every array.

    A user without held-out items has NaN for every model and seed; a diverged seed may have
    NaN rows. Dropping such users from all arrays keeps comparisons paired.
    """
    mask = None
    for a in arrays:
        ok = np.isfinite(np.atleast_2d(np.asarray(a, dtype=np.float64))).all(axis=0)
        mask = ok if mask is None else mask & ok
    if mask is None:
        raise ValueError("complete_users needs at least one array")
    return mask


def _as_runs(values: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"per-user values must be (n_seeds, n_users), got shape {x.shape}")
    return x


def bootstrap_replicates(
    arrays: list[np.ndarray],
    *,
    stochastic: list[bool],
    n_resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Two-way bootstrap replicates of the grand mean of each (n_seeds, n_users) array.

    Users are resampled jointly for all arrays (the same test users were scored by every
    model: pairing); the seeds of each stochastic array are resampled on their own (models
    do not share seeds). Returns an (n_arrays, n_resamples) array. Columns must be finite.
    """
    runs = [_as_runs(a) for a in arrays]
    n_users = runs[0].shape[1]
    if any(r.shape[1] != n_users for r in runs):
        raise ValueError("paired arrays need the same test users (columns)")
    if n_users == 0:
        return np.full((len(runs), n_resamples), np.nan)
    out = np.empty((len(runs), n_resamples))
    for start in range(0, n_resamples, _CHUNK):
        b = min(_CHUNK, n_resamples - start)
        weights = _user_counts(rng, b, n_users) / n_users  # (b, users), rows sum to 1
        for i, (x, noisy) in enumerate(zip(runs, stochastic, strict=True)):
            seed_means = weights @ x.T  # (b, seeds): each seed's mean over resampled users
            n_seeds = x.shape[0]
            if noisy and n_seeds > 1:
                pick = rng.integers(0, n_seeds, size=(b, n_seeds))
                seed_w = np.stack([np.bincount(p, minlength=n_seeds) for p in pick]) / n_seeds
                out[i, start : start + b] = (seed_means * seed_w).sum(axis=1)
            else:
                out[i, start : start + b] = seed_means.mean(axis=1)
    return out


def _percentile_ci(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return float(low), float(high)


def check_seeds(values: np.ndarray, *, stochastic: bool, name: str = "model") -> None:
    """A stochastic model's interval needs >= 2 seeds: refuse rather than hide seed noise.

    Raises:
        StatsConfigError: naming the model and benchmark.n_seeds.
    """
    n_seeds = _as_runs(values).shape[0]
    if stochastic and n_seeds < 2:
        raise StatsConfigError(
            f"{name} is trained with random seeds but has {n_seeds} seed run(s): its interval "
            "would hide training noise; use benchmark.n_seeds >= 2 (or benchmark.interval=none)"
        )


def bootstrap_ci(
    values: np.ndarray,
    *,
    stochastic: bool,
    settings: StatsSettings,
    rng: np.random.Generator | None = None,
) -> MeanCI:
    """Mean and two-way bootstrap interval of per-user values (n_seeds, n_users).

    See `bootstrap_cis` (this is it for one metric).

    Raises:
        StatsConfigError: a stochastic model with fewer than 2 seeds.
    """
    return bootstrap_cis({"x": values}, stochastic=stochastic, settings=settings, rng=rng)["x"]


def bootstrap_cis(
    metrics: Mapping[str, np.ndarray],
    *,
    stochastic: bool,
    settings: StatsSettings,
    rng: np.random.Generator | None = None,
) -> dict[str, MeanCI]:
    """Mean and two-way bootstrap interval of each metric's per-user values of one model.

    The mean is the mean over seeds of each seed's mean over its users with a value (NaN =
    no held-out item). Each replicate resamples the test users (with replacement) and, for a
    stochastic model, its seeds; all metrics share the replicates (one resampled world of
    users and seeds), which makes many metrics cost about as much as one. ``MeanCI.n`` is
    the number of users with a value in every seed.

    Raises:
        StatsConfigError: a stochastic model with fewer than 2 seeds.
    """
    names = list(metrics)
    runs = [_as_runs(metrics[n]) for n in names]
    if not runs:
        return {}
    n_seeds, n_users = runs[0].shape
    if any(r.shape != (n_seeds, n_users) for r in runs):
        raise ValueError("every metric of a model needs the same (n_seeds, n_users) shape")
    check_seeds(runs[0], stochastic=stochastic)
    stacked = np.concatenate(runs)  # (metrics * seeds, users)
    present = np.isfinite(stacked)
    filled = np.where(present, stacked, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        seed_means = filled.sum(axis=1) / present.sum(axis=1)  # (metrics * seeds,)
    point = np.nanmean(seed_means.reshape(len(names), n_seeds), axis=1) if n_users else None
    rng = rng if rng is not None else np.random.default_rng(settings.seed)
    reps = np.empty((len(names), settings.n_resamples))
    present_f = present.astype(np.float64)
    resample_seeds = stochastic and n_seeds > 1
    for start in range(0, settings.n_resamples, _CHUNK):
        b = min(_CHUNK, settings.n_resamples - start)
        counts = _user_counts(rng, b, n_users)  # (b, users)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (counts @ filled.T) / (counts @ present_f.T)  # (b, metrics * seeds)
        means = means.reshape(b, len(names), n_seeds)
        if resample_seeds:
            pick = rng.integers(0, n_seeds, size=(b, n_seeds))
            weights = np.stack([np.bincount(p, minlength=n_seeds) for p in pick]) / n_seeds
            reps[:, start : start + b] = np.einsum("bms,bs->mb", np.nan_to_num(means), weights)
        else:
            reps[:, start : start + b] = np.nanmean(means, axis=2).T
    out = {}
    for i, name in enumerate(names):
        n = int(present[i * n_seeds : (i + 1) * n_seeds].all(axis=0).sum())
        if n == 0 or point is None or not np.isfinite(point[i]):
            out[name] = MeanCI(float("nan"), float("nan"), float("nan"), n, settings.confidence)
            continue
        low, high = _percentile_ci(reps[i], settings.confidence)
        out[name] = MeanCI(float(point[i]), low, high, n, settings.confidence)
    return out


def _user_counts(rng: np.random.Generator, b: int, n_users: int) -> np.ndarray:
    """(b, n_users) float counts: how often each user is drawn in each of b resamples."""
    picks = rng.integers(0, n_users, size=(b, n_users))
    offsets = (np.arange(b) * n_users)[:, None]
    counts = np.bincount((picks + offsets).ravel(), minlength=b * n_users)
    return counts.reshape(b, n_users).astype(np.float64)


@dataclass(frozen=True)
class Comparison:
    """A model against the baseline on the same test users.

    Attributes:
        mean_difference: grand mean of the model minus the baseline's (test metric).
        ci_low, ci_high: two-way bootstrap interval of that difference.
        p_value: two-sided p-value of "mean difference = 0" (method ``test``).
        se: bootstrap standard error of the difference.
        mdd: minimum detectable difference: (z_{1-alpha/(2m)} + z_{power}) * se, with m the
            number of comparisons (Holm's strictest level) and 80% power.
        n_users: users with finite values for both models.
        test: "bootstrap" or "permutation".
    """

    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    mdd: float
    n_users: int
    test: str


def minimum_detectable_difference(se: float, alpha: float, power: float = POWER) -> float:
    """Smallest true difference a two-sided level-``alpha`` test detects with ``power``."""
    return float((sps.norm.ppf(1.0 - alpha / 2.0) + sps.norm.ppf(power)) * se)


def compare(
    model: np.ndarray,
    baseline: np.ndarray,
    *,
    model_stochastic: bool,
    baseline_stochastic: bool,
    settings: StatsSettings,
    n_comparisons: int = 1,
    rng: np.random.Generator | None = None,
) -> Comparison:
    """Paired comparison of per-user values (n_seeds, n_users) of a model and the baseline.

    The bootstrap p-value is the share of centred replicates at least as far from 0 as the
    observed difference, (1 + #{|D* - D| >= |D|}) / (B + 1): the test that matches the
    interval. The permutation p-value flips the sign of each user's seed-averaged
    difference (exact when 2^users <= n_resamples).
    """
    a, b = _as_runs(model), _as_runs(baseline)
    keep = complete_users(a, b)
    a, b = a[:, keep], b[:, keep]
    n = int(a.shape[1])
    if n == 0:
        nan = float("nan")
        return Comparison(nan, nan, nan, nan, nan, nan, 0, settings.test)
    rng = rng if rng is not None else np.random.default_rng(settings.seed)
    diff = float(a.mean() - b.mean())
    reps = bootstrap_replicates(
        [a, b],
        stochastic=[model_stochastic, baseline_stochastic],
        n_resamples=settings.n_resamples,
        rng=rng,
    )
    d_star = reps[0] - reps[1]
    low, high = _percentile_ci(d_star, settings.confidence)
    se = float(d_star.std(ddof=1))
    if settings.test == "bootstrap":
        extreme = np.abs(d_star - diff) >= abs(diff) - 1e-15
        p = float((1 + extreme.sum()) / (len(d_star) + 1))
    else:
        per_user = a.mean(axis=0) - b.mean(axis=0)
        if not np.any(per_user != 0):
            p = 1.0
        else:
            result = sps.permutation_test(
                (per_user,),
                lambda d, axis=-1: np.mean(d, axis=axis),
                permutation_type="samples",
                vectorized=True,
                n_resamples=settings.n_resamples,
                alternative="two-sided",
                random_state=rng,
            )
            p = float(result.pvalue)
    mdd = minimum_detectable_difference(se, settings.alpha / max(n_comparisons, 1))
    return Comparison(diff, low, high, min(p, 1.0), se, mdd, n, settings.test)


def verdict(
    comparison: Comparison, p_holm: float, *, margin: float, alpha: float, n_users: int
) -> str:
    """The comparison in words.

    "better"/"worse" when the Holm-adjusted p-value is below alpha; "equivalent within
    +-margin" only when the difference's interval lies inside [-margin, margin]; otherwise
    "not distinguishable with N users" and the minimum detectable difference.
    """
    if math.isnan(comparison.mean_difference):
        return "no users to compare"
    if p_holm < alpha:
        return "better" if comparison.mean_difference > 0 else "worse"
    if margin > 0 and -margin <= comparison.ci_low and comparison.ci_high <= margin:
        return f"equivalent within ±{margin:g}"
    return f"not distinguishable with {n_users} users (detectable difference ±{comparison.mdd:.4f})"
