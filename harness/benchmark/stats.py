"""Statistics for comparing models over test users and training seeds.

The benchmark's numbers come from per-user test values of shape (n_seeds, n_users): every
training seed of a model scored the same test users, so users and seeds are **crossed**.
For one stochastic model, a two-way random-effects model describes the values,

    Y[s, u] = mu + a_u + b_s + e_su,

with a user effect a_u (variance sigma_a^2, shared by the models: the pairing), a training-run
effect b_s (sigma_b^2, independent per model: models do not share runs) and a user x seed
interaction e_su (sigma_e^2). A deterministic model (one run) has no b_s. The ANOVA mean squares
of the (n_seeds, n_users) table, MS_U (users), MS_S (seeds), MS_E (residual), estimate them:
E[MS_E] = sigma_e^2, E[MS_U] = sigma_e^2 + n_s sigma_a^2, E[MS_S] = sigma_e^2 + n_u sigma_b^2.

- One model's grand mean (`model_interval`): Var = sigma_a^2 / n_u + (sigma_b^2 + sigma_e^2 /
  n_u) / n_s, estimated by max(MS_U - MS_E, 0) / (n_u n_s) + MS_S / (n_u n_s): the user
  component is truncated at 0, the variance of the seed means (MS_S / n_u) is kept whole.
- A paired difference A - B on the same users (`compare`): with d_u the per-user difference
  of the seed-averaged values, Var(D) = sigma_g^2 / n_u + sum over stochastic models of
  MS_S / (n_u n_s), where sigma_g^2 / n_u (a user x model interaction: how much the models'
  advantage varies between users beyond seed noise) is estimated by s_d^2 / n_u - sum of
  MS_E / (n_u n_s), truncated at 0. The user effect cancels; each model's seed noise enters
  once, through its own seed means. The seed mean squares of the two models are pooled: one
  run variance for the compared models, as a mixed model with a model:seed random effect
  assumes (with 2 seeds per model Welch-type separate terms would make the test very
  conservative, type-I error ~0.02; pooled, a 4x variance ratio between the models still
  gives 0.056 at level 0.05 in simulation).
- Both use Student t with Satterthwaite degrees of freedom from the independent mean squares
  (df of the seed terms: n_s - 1 per stochastic model, so 5 seeds and 2 models give ~8 when
  the seeds dominate, n_u - 1 when the users do). Known limit: a single model's interval with
  only 2 seeds, when its seed variance dominates, undercovers (Satterthwaite df estimated from
  a 1-df mean square); use >= 3 seeds (the default is 5). The two-sided p-value is the t-test of
  "difference = 0", consistent with the interval. Its minimum detectable difference is
  (t_{1-alpha/(2m), df} + t_{power, df}) * se with m the comparisons in the family.
- Equivalence (`Comparison.p_equivalence`) is a TOST against +-margin; the summary
  Holm-adjusts it over the same family and level as superiority.
- Folds (`folds=`, user-level cross-validation): each fold's users are scored by that fold's
  own training runs, so seeds and users are nested in folds and crossed within a fold. The
  mean squares are computed within folds and pooled (user and residual ones) or kept per fold
  (seed ones, each with n_s - 1 df); the mean is over all users. Fold training-set effects are
  treated as fixed: the inference is conditional on the K training sets, as the inference
  without folds is conditional on the one training set of the split.
- `VarianceComponents`, `detectable_difference`, `users_needed`: the same variance formula
  from stated or estimated components, for planning how many users and seeds a test needs.
- `holm`: Holm's step-down correction; `verdict` turns a comparison into words.
- `mean_ci`: a t-interval over independent values (set-level metrics: one value per seed);
  `paired_wilcoxon`: a signed-rank test (kept for comparisons with older reports).

Calibration (type-I error, coverage, power, TOST level) is checked by null simulations in
`tests/test_stats_calibration.py`; `benchmarks/bench_stats.py` prints the table. Every
computation runs on a leading batch axis (`compare_batch`, `interval_batch`), which the
simulations call with thousands of simulated data sets and `compare` with one. There is no
resampling: the numbers are deterministic. Kept free of TensorFlow and plotting so that
reports and tests import it cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from harness.errors import UserError

METHOD = "components"  # variance components, users x seeds crossed, Satterthwaite t
INTERVALS = (METHOD, "none")
TESTS = (METHOD,)
POWER = 0.8  # of the minimum detectable difference
_REMOVED = {
    "bootstrap": (
        "was removed: resampling 2-10 seeds is anti-conservative when seed variance dominates "
        "(type-I error 0.095 at level 0.05) and conservative when the user x seed interaction "
        "dominates"
    ),
    "permutation": (
        "was removed: flipping signs of seed-averaged per-user differences ignores the "
        "variance between training seeds (type-I error up to 0.93 at level 0.05)"
    ),
    "t_seeds": (
        "was removed: a t-interval over seed means ignores which users happened to be test "
        "users and has zero width for deterministic models"
    ),
}


class StatsConfigError(UserError, ValueError):
    """A statistics option is unknown, out of range or contradicts another one."""


def _check_method(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value in allowed:
        return
    if value in _REMOVED:
        raise StatsConfigError(
            f"benchmark.{key}={value!r} {_REMOVED[value]}; use benchmark.{key}={METHOD} "
            "(variance components of users x seeds crossed, Satterthwaite t)"
        )
    raise StatsConfigError(f"benchmark.{key}={value!r} is unknown; use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class StatsSettings:
    """How intervals and tests are computed (the `benchmark.*` statistics keys).

    Attributes:
        confidence: two-sided coverage of every interval; alpha = 1 - confidence is the
            (family-wise) level of the superiority and equivalence tests.
        interval: per-model interval: "components" (variance components of users x seeds
            crossed, Satterthwaite t; the default) or "none".
        test: test of the paired mean difference: "components" (the same model; the only
            one: "bootstrap" and "permutation" were removed, see the module docstring).
        n_resamples: unused by the "components" method (no resampling); still validated
            (>= 100) so that older configs load unchanged.
        seed: unused by the "components" method (nothing is random); kept for older configs.
        margin: equivalence margin on the test metric (e.g. 0.01 NDCG@100); >= 0, 0 = never
            claim equivalence.
    """

    confidence: float = 0.95
    interval: str = METHOD
    test: str = METHOD
    n_resamples: int = 2000
    seed: int = 0
    margin: float = 0.01

    def __post_init__(self) -> None:
        if not (isinstance(self.confidence, int | float) and 0.0 < self.confidence < 1.0):
            raise StatsConfigError(
                f"benchmark.confidence={self.confidence!r} must lie in (0, 1), e.g. 0.95"
            )
        _check_method("interval", self.interval, INTERVALS)
        _check_method("test", self.test, TESTS)
        if isinstance(self.n_resamples, bool) or not isinstance(self.n_resamples, int):
            raise StatsConfigError(f"benchmark.n_resamples={self.n_resamples!r} must be an integer")
        if self.n_resamples < 100:
            raise StatsConfigError(
                f"benchmark.n_resamples={self.n_resamples} is too few; use >= 100 "
                "(default 2000; unused by the components method)"
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


def _as_batch(values: np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(
            f"batched per-user values must be (batch, n_seeds, n_users), got shape {x.shape}"
        )
    return x


def check_seeds(values: np.ndarray, *, stochastic: bool, name: str = "model") -> None:
    """A stochastic model's interval needs >= 2 seeds: refuse rather than hide seed noise.

    Raises:
        StatsConfigError: naming the model and benchmark.n_seeds.
    """
    n_seeds = np.shape(values)[-2] if np.ndim(values) >= 2 else 1
    if stochastic and n_seeds < 2:
        raise StatsConfigError(
            f"{name} is trained with random seeds but has {n_seeds} seed run(s): its interval "
            "would hide training noise; use benchmark.n_seeds >= 2 (or benchmark.interval=none)"
        )


@dataclass(frozen=True)
class _Folds:
    """Fold id per user column as codes 0..K-1, with the users per fold."""

    codes: np.ndarray  # (n_users,) int
    sizes: np.ndarray  # (K,) users per fold
    onehot: np.ndarray  # (n_users, K) float: fold membership

    @property
    def k(self) -> int:
        return int(self.sizes.size)


def _folds(folds: np.ndarray | None, n_users: int) -> _Folds:
    if folds is None:
        codes = np.zeros(n_users, dtype=np.intp)
    else:
        raw = np.asarray(folds).ravel()
        if raw.size != n_users:
            raise ValueError(
                f"folds needs one fold id per user column: got {raw.size} for {n_users} users"
            )
        _, codes = np.unique(raw, return_inverse=True)
    sizes = np.bincount(codes, minlength=int(codes.max(initial=-1)) + 1)
    onehot = (codes[:, None] == np.arange(sizes.size)[None, :]).astype(np.float64)
    return _Folds(codes, sizes, onehot)


def _kept_folds(folds: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    """The fold ids of the users kept (complete ones)."""
    if folds is None:
        return None
    raw = np.asarray(folds).ravel()
    if raw.size != keep.size:
        raise ValueError(
            f"folds needs one fold id per user column: got {raw.size} for {keep.size} users"
        )
    return raw[keep]


@dataclass(frozen=True)
class _MeanSquares:
    """Two-way ANOVA of (batch, n_seeds, n_users) values, within folds (batch axis first).

    ms_u, ms_e: user and residual mean squares pooled over folds (df_u, df_e); ms_s: each
    fold's seed mean square (batch, K), n_seeds - 1 df each; user_means (batch, n_users).
    """

    n_seeds: int
    user_means: np.ndarray
    ms_u: np.ndarray
    df_u: int
    ms_e: np.ndarray
    df_e: int
    ms_s: np.ndarray
    df_s: int


def _mean_squares(x: np.ndarray, folds: _Folds) -> _MeanSquares:
    n_seeds, n_users = x.shape[1], x.shape[2]
    k = folds.k
    user_means = x.mean(axis=1)  # (B, U)
    seed_fold = (x @ folds.onehot) / folds.sizes  # (B, S, K): each run's mean on its fold
    fold_means = seed_fold.mean(axis=1)  # (B, K)
    df_u = n_users - k
    ss_u = n_seeds * ((user_means - fold_means[:, folds.codes]) ** 2).sum(axis=-1)
    if n_seeds > 1:
        dev = seed_fold - fold_means[:, None, :]
        ms_s = folds.sizes * (dev**2).sum(axis=1) / (n_seeds - 1)  # (B, K)
        resid = x - user_means[:, None, :] - dev[:, :, folds.codes]
        ss_e = (resid**2).sum(axis=(1, 2))
    else:
        ms_s = np.zeros(fold_means.shape)
        ss_e = np.zeros(x.shape[0])
    df_e = (n_seeds - 1) * df_u
    with np.errstate(invalid="ignore", divide="ignore"):
        ms_u = ss_u / df_u if df_u > 0 else np.full(x.shape[0], np.nan)
        ms_e = ss_e / df_e if df_e > 0 else np.zeros(x.shape[0])
    return _MeanSquares(n_seeds, user_means, ms_u, df_u, ms_e, df_e, ms_s, n_seeds - 1)


def _satterthwaite(terms: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum V of terms c_i MS_i (given as the products) and its Satterthwaite df,
    V^2 / sum((c_i MS_i)^2 / df_i). df = inf when V = 0 (nothing varies)."""
    total = sum(t for t, _ in terms)
    denom = sum(t**2 / df for t, df in terms if df > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(denom > 0, total**2 / np.where(denom > 0, denom, 1.0), np.inf)
    return np.maximum(total, 0.0), df


def _seed_terms(
    sides: list[_MeanSquares], folds: _Folds, n_users: int
) -> list[tuple[np.ndarray, float]]:
    """The seed part of the variance of each stochastic model's pooled mean, summed.

    Per model: sum over folds of w_k^2 (sigma_b^2 + sigma_e^2 / n_k) / n_s, w_k = n_k / n_u,
    = (r sigma_b^2 / K + sigma_e^2 / n_u) / n_s with r = K sum w_k^2 (1 for equal folds).
    sigma_b^2 comes from the seed mean squares pooled over folds and models (one run variance;
    E[MS_S] = sigma_e^2 + (n_u / K) sigma_b^2), so the part is
    (r MS_S + (1 - r) MS_E) / (n_u n_s): MS_S alone without folds or with equal folds.
    """
    if not sides:
        return []
    r = folds.k * float(((folds.sizes / n_users) ** 2).sum())
    df_s = folds.k * sum(ms.df_s for ms in sides)
    ms_s = sum(ms.df_s * ms.ms_s.sum(axis=1) for ms in sides) / df_s
    terms = [(r * ms_s * sum(1.0 / (n_users * ms.n_seeds) for ms in sides), float(df_s))]
    if r > 1.0 + 1e-12:  # unequal folds
        terms += [((1.0 - r) * ms.ms_e / (n_users * ms.n_seeds), float(ms.df_e)) for ms in sides]
    return terms


def _t_interval(center, se, df, confidence):
    with np.errstate(invalid="ignore"):
        half = sps.t.ppf(0.5 + confidence / 2.0, df) * se
    half = np.where(se == 0, 0.0, half)
    return center - half, center + half


@dataclass(frozen=True)
class IntervalBatch:
    """Per-model intervals of a batch of data sets (every attribute has shape (batch,))."""

    mean: np.ndarray
    se: np.ndarray
    df: np.ndarray
    low: np.ndarray
    high: np.ndarray


def interval_batch(
    values: np.ndarray,
    *,
    stochastic: bool,
    folds: np.ndarray | None = None,
    confidence: float = 0.95,
) -> IntervalBatch:
    """Mean and t-interval of one model's grand mean, for a batch of complete data sets.

    Args:
        values: (batch, n_seeds, n_users), all finite (drop users first).
        stochastic: the seeds change the model's result (False: the rows are averaged and
            only user sampling counts).
        folds: fold id per user column (None = one fold); see the module docstring.
        confidence: two-sided coverage.

    Returns:
        mean, se, Satterthwaite df, low, high; NaN with fewer than 2 users per fold on
        average (no user degrees of freedom).
    """
    x = _as_batch(values)
    n_users = x.shape[2]
    f = _folds(folds, n_users)
    if stochastic and x.shape[1] < 2:
        check_seeds(x, stochastic=True)
    ms = _mean_squares(x, f)
    n_s = ms.n_seeds
    mean = x.mean(axis=(1, 2))
    if stochastic:
        user_part = (ms.ms_u - ms.ms_e) / (n_users * n_s)
        keep = user_part > 0
        user_terms = [
            (np.where(keep, ms.ms_u / (n_users * n_s), 0.0), ms.df_u),
            (np.where(keep, -ms.ms_e / (n_users * n_s), 0.0), ms.df_e),
        ]
        var, df = _satterthwaite(user_terms + _seed_terms([ms], f, n_users))
    else:
        var, df = _satterthwaite([(ms.ms_u / (n_users * n_s), ms.df_u)])
    se = np.sqrt(var)
    if ms.df_u < 1:
        se = np.full_like(mean, np.nan)
    low, high = _t_interval(mean, se, df, confidence)
    return IntervalBatch(mean, se, df, low, high)


@dataclass(frozen=True)
class ComparisonBatch:
    """Paired comparisons of a batch of data sets (every attribute has shape (batch,)).

    mean_difference, se, df (Satterthwaite), ci_low/ci_high (two-sided ``confidence``),
    p_value (two-sided t-test of 0), p_equivalence (TOST against +-margin; 1 when margin is
    0), mdd (minimum detectable difference at level alpha / n_comparisons and ``power``).
    """

    mean_difference: np.ndarray
    se: np.ndarray
    df: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    p_equivalence: np.ndarray
    mdd: np.ndarray


def difference_variance(
    model: np.ndarray,
    baseline: np.ndarray,
    *,
    model_stochastic: bool,
    baseline_stochastic: bool,
    folds: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean difference, its estimated variance and Satterthwaite df, for a batch.

    Args:
        model, baseline: (batch, n_seeds, n_users) each (seed counts may differ), finite,
            the same users in the same column order.

    Returns:
        (difference, variance, df), each (batch,).
    """
    a, b = _as_batch(model), _as_batch(baseline)
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(
            f"paired arrays need the same batch and test users (columns): {a.shape} vs {b.shape}"
        )
    n_users = a.shape[2]
    f = _folds(folds, n_users)
    sides = []
    for x, noisy in ((a, model_stochastic), (b, baseline_stochastic)):
        if noisy:
            check_seeds(x, stochastic=True)
            sides.append(_mean_squares(x, f))
    d = a.mean(axis=1) - b.mean(axis=1)  # (B, U): per-user difference of seed means
    diff = d.mean(axis=1)
    df_d = n_users - f.k
    dev = d - ((d @ f.onehot) / f.sizes)[:, f.codes]
    with np.errstate(invalid="ignore", divide="ignore"):
        s2 = (dev**2).sum(axis=1) / df_d if df_d > 0 else np.full(diff.shape, np.nan)
    g_terms = [(s2 / n_users, df_d)]
    g_terms += [(-ms.ms_e / (n_users * ms.n_seeds), ms.df_e) for ms in sides]
    keep = sum(t for t, _ in g_terms) > 0  # sigma_g^2 (user x model) truncated at 0
    terms = [(np.where(keep, t, 0.0), df) for t, df in g_terms]
    terms += _seed_terms(sides, f, n_users)  # one run variance: pooled over the models
    var, df = _satterthwaite(terms)
    if df_d < 1:
        var = np.full(diff.shape, np.nan)
    return diff, var, df


def compare_batch(
    model: np.ndarray,
    baseline: np.ndarray,
    *,
    model_stochastic: bool,
    baseline_stochastic: bool,
    folds: np.ndarray | None = None,
    confidence: float = 0.95,
    margin: float = 0.0,
    n_comparisons: int = 1,
    power: float = POWER,
) -> ComparisonBatch:
    """`compare` for a batch of complete data sets: the code the benchmark runs (batch 1) and
    the calibration simulations run (thousands). See `difference_variance` for the inputs."""
    diff, var, df = difference_variance(
        model,
        baseline,
        model_stochastic=model_stochastic,
        baseline_stochastic=baseline_stochastic,
        folds=folds,
    )
    se = np.sqrt(var)
    alpha = 1.0 - confidence
    low, high = _t_interval(diff, se, df, confidence)
    zero = se == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(zero, 1.0, se)
        p = 2.0 * sps.t.sf(np.abs(diff) / safe, df)
        p = np.where(zero, np.where(diff == 0, 1.0, 0.0), p)
        if margin > 0:
            p_low = sps.t.sf((diff + margin) / safe, df)  # H0: difference <= -margin
            p_high = sps.t.cdf((diff - margin) / safe, df)  # H0: difference >= +margin
            p_eq = np.maximum(p_low, p_high)
            p_eq = np.where(zero, np.where(np.abs(diff) < margin, 0.0, 1.0), p_eq)
        else:
            p_eq = np.ones_like(diff)
        m = max(int(n_comparisons), 1)
        mdd = (sps.t.ppf(1.0 - alpha / (2 * m), df) + sps.t.ppf(power, df)) * se
    nan = np.isnan(se)
    p, p_eq, mdd = (np.where(nan, np.nan, v) for v in (p, p_eq, mdd))
    return ComparisonBatch(diff, se, df, low, high, np.minimum(p, 1.0), p_eq, mdd)


def _clean(values: np.ndarray) -> np.ndarray:
    """Drop seed rows that are NaN for every user (a diverged run)."""
    x = _as_runs(values)
    rows = np.isfinite(x).any(axis=1)
    return x[rows] if rows.any() else x


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
    x = _clean(values)
    check_seeds(x, stochastic=stochastic)
    keep = complete_users(x)
    x = x[:, keep]
    fold_ids = _kept_folds(folds, keep)
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
    a, b = _clean(model), _clean(baseline)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"paired comparison needs the same test users: {a.shape[1]} vs {b.shape[1]} columns"
        )
    keep = complete_users(a, b)
    a, b = a[:, keep], b[:, keep]
    fold_ids = _kept_folds(folds, keep)
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


# --- planning: detectable difference and users needed ----------------------------------------


@dataclass(frozen=True)
class VarianceComponents:
    """Variance components of per-user values (one metric), for planning a comparison.

    Attributes:
        seed: sigma_b^2, variance of a stochastic model's training-run effect (a run's mean
            over infinitely many users, around the model's mean).
        residual: sigma_e^2, user x seed interaction: how a user's value varies between runs.
        user_model: sigma_g^2, user x model interaction: variance over users of the per-user
            difference between two models beyond seed noise (for a deterministic model its
            per-user deviations are included here).
        user: sigma_a^2, variance of the user effect (cancels in paired differences; only
            for per-model intervals; NaN when unknown).
    """

    seed: float
    residual: float
    user_model: float
    user: float = float("nan")

    @classmethod
    def estimate(
        cls,
        model: np.ndarray,
        baseline: np.ndarray,
        *,
        model_stochastic: bool = True,
        baseline_stochastic: bool = True,
        folds: np.ndarray | None = None,
    ) -> VarianceComponents:
        """Estimate the components from a pilot's per-user values (n_seeds, n_users) of two
        models (pairwise-complete users). seed, residual and user are averaged over the
        stochastic models (user over both); each is truncated at 0."""
        a, b = _clean(model), _clean(baseline)
        keep = complete_users(a, b)
        a, b = a[:, keep], b[:, keep]
        fold_ids = _kept_folds(folds, keep)
        f = _folds(fold_ids, a.shape[1])
        seed, resid, user, e_over_s = [], [], [], 0.0
        for x, noisy in ((a, model_stochastic), (b, baseline_stochastic)):
            ms = _mean_squares(x[None], f)
            if noisy:
                check_seeds(x, stochastic=True)
                sb = np.mean((ms.ms_s[0] - ms.ms_e[0]) / f.sizes)
                seed.append(max(float(sb), 0.0))
                resid.append(float(ms.ms_e[0]))
                e_over_s += float(ms.ms_e[0]) / ms.n_seeds
                user.append(max(float(ms.ms_u[0] - ms.ms_e[0]) / ms.n_seeds, 0.0))
            else:
                user.append(float(ms.ms_u[0]))
        d = a.mean(axis=0) - b.mean(axis=0)
        dev = d - ((d @ f.onehot) / f.sizes)[f.codes]
        s2 = float((dev**2).sum() / max(d.size - f.k, 1))
        return cls(
            seed=float(np.mean(seed)) if seed else 0.0,
            residual=float(np.mean(resid)) if resid else 0.0,
            user_model=max(s2 - e_over_s, 0.0),
            user=float(np.mean(user)),
        )


def _planned_variance(
    c: VarianceComponents,
    n_users: np.ndarray,
    seeds: list[int],
    n_folds: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected Var(D) and Satterthwaite df of `difference_variance` for planned sizes
    (``seeds``: the seed counts of the stochastic models; equal folds)."""
    n = np.asarray(n_users, dtype=np.float64)
    terms = []
    if c.user_model > 0:
        s_d2 = c.user_model + sum(c.residual / s for s in seeds)
        terms.append((s_d2 / n, n - n_folds))
        terms += [(-c.residual / (n * s), (s - 1) * (n - n_folds)) for s in seeds]
    if seeds:
        ms_s = c.residual + n / n_folds * c.seed
        terms.append(
            (ms_s * sum(1.0 / (n * s) for s in seeds), float(n_folds * sum(s - 1 for s in seeds)))
        )
    if not terms:
        return np.zeros_like(n), np.full_like(n, np.inf)
    total = sum(t for t, _ in terms)
    denom = sum(t**2 / df for t, df in terms)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total, np.where(denom > 0, total**2 / denom, np.inf)


def detectable_difference(
    components: VarianceComponents,
    *,
    n_users: int | np.ndarray,
    n_seeds_model: int,
    n_seeds_baseline: int,
    alpha: float = 0.05,
    n_comparisons: int = 1,
    power: float = POWER,
    model_stochastic: bool = True,
    baseline_stochastic: bool = True,
    n_folds: int = 1,
) -> float | np.ndarray:
    """The minimum detectable difference a comparison will have, from variance components.

    (t_{1-alpha/(2m), df} + t_{power, df}) * sqrt(Var(D)) with Var(D) and df the expected
    values of what `compare` estimates for ``n_users`` test users (spread evenly over
    ``n_folds`` folds, each fold with its own runs) and the seeds per model (a deterministic
    model, ``*_stochastic=False``, contributes no seed term). Vectorised over ``n_users``.
    """
    seeds = [
        s
        for s, noisy in ((n_seeds_model, model_stochastic), (n_seeds_baseline, baseline_stochastic))
        if noisy
    ]
    if any(s < 2 for s in seeds):
        raise StatsConfigError(
            "a stochastic model needs >= 2 seeds for its seed variance (benchmark.n_seeds >= 2)"
        )
    var, df = _planned_variance(components, n_users, seeds, n_folds)
    m = max(int(n_comparisons), 1)
    mdd = (sps.t.ppf(1.0 - alpha / (2 * m), df) + sps.t.ppf(power, df)) * np.sqrt(var)
    return float(mdd) if np.ndim(mdd) == 0 else mdd


def users_needed(
    components: VarianceComponents,
    *,
    margin: float,
    n_seeds_model: int,
    n_seeds_baseline: int,
    alpha: float = 0.05,
    n_comparisons: int = 1,
    power: float = POWER,
    model_stochastic: bool = True,
    baseline_stochastic: bool = True,
    n_folds: int = 1,
    max_users: int = 10_000_000,
) -> int | None:
    """Smallest number of test users whose detectable difference is <= ``margin``, or None
    when even ``max_users`` do not suffice (the seed variance alone is too large: more seeds
    or folds are needed, not more users)."""
    kwargs = dict(
        n_seeds_model=n_seeds_model,
        n_seeds_baseline=n_seeds_baseline,
        alpha=alpha,
        n_comparisons=n_comparisons,
        power=power,
        model_stochastic=model_stochastic,
        baseline_stochastic=baseline_stochastic,
        n_folds=n_folds,
    )

    def ok(n: int) -> bool:
        return bool(detectable_difference(components, n_users=n, **kwargs) <= margin)

    low = max(2 * n_folds, n_folds + 1)
    if ok(low):
        return low
    high = low
    while not ok(high):
        if high >= max_users:
            return None
        high = min(high * 2, max_users)
    while high - low > 1:  # ok(high), not ok(low)
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid, high)
    return high
