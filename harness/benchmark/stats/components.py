"""The variance-components core on a batch of data sets: the two-way ANOVA mean squares of
(batch, n_seeds, n_users) per-user values (within folds), their Satterthwaite degrees of
freedom, and from them one model's interval (`interval_batch`) and a paired difference
(`difference_variance`, `compare_batch`). The benchmark calls it with batch 1, the
calibration simulations with thousands; the model is in ``harness.benchmark.stats``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from harness.benchmark.stats.settings import POWER, StatsConfigError


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


def as_runs(values: np.ndarray) -> np.ndarray:
    """One model's values as a float (n_seeds, n_users) array (a 1-d array is one seed)."""
    x = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"per-user values must be (n_seeds, n_users), got shape {x.shape}")
    return x


def as_batch(values: np.ndarray) -> np.ndarray:
    """Values as a float (batch, n_seeds, n_users) array."""
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
class Folds:
    """Fold id per user column as codes 0..K-1, with the users per fold."""

    codes: np.ndarray  # (n_users,) int
    sizes: np.ndarray  # (K,) users per fold
    onehot: np.ndarray  # (n_users, K) float: fold membership

    @property
    def k(self) -> int:
        return int(self.sizes.size)


def fold_layout(folds: np.ndarray | None, n_users: int) -> Folds:
    """The folds of the user columns (None: one fold holding every user)."""
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
    return Folds(codes, sizes, onehot)


def kept_folds(folds: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
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
class MeanSquares:
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


def mean_squares(x: np.ndarray, folds: Folds) -> MeanSquares:
    """The two-way ANOVA of (batch, n_seeds, n_users) values within ``folds``."""
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
    return MeanSquares(n_seeds, user_means, ms_u, df_u, ms_e, df_e, ms_s, n_seeds - 1)


def _satterthwaite(terms: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum V of terms c_i MS_i (given as the products) and its Satterthwaite df,
    V^2 / sum((c_i MS_i)^2 / df_i). df = inf when V = 0 (nothing varies)."""
    total = sum(t for t, _ in terms)
    denom = sum(t**2 / df for t, df in terms if df > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(denom > 0, total**2 / np.where(denom > 0, denom, 1.0), np.inf)
    return np.maximum(total, 0.0), df


def _seed_terms(
    sides: list[MeanSquares], folds: Folds, n_users: int
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


def t_interval(center, se, df, confidence):
    """center -+ the two-sided t quantile times se (zero width where se is 0)."""
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
    x = as_batch(values)
    n_users = x.shape[2]
    f = fold_layout(folds, n_users)
    if stochastic and x.shape[1] < 2:
        check_seeds(x, stochastic=True)
    ms = mean_squares(x, f)
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
    low, high = t_interval(mean, se, df, confidence)
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
    a, b = as_batch(model), as_batch(baseline)
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(
            f"paired arrays need the same batch and test users (columns): {a.shape} vs {b.shape}"
        )
    n_users = a.shape[2]
    f = fold_layout(folds, n_users)
    sides = []
    for x, noisy in ((a, model_stochastic), (b, baseline_stochastic)):
        if noisy:
            check_seeds(x, stochastic=True)
            sides.append(mean_squares(x, f))
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
    low, high = t_interval(diff, se, df, confidence)
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


def clean_runs(values: np.ndarray) -> np.ndarray:
    """Drop seed rows that are NaN for every user (a diverged run)."""
    x = as_runs(values)
    rows = np.isfinite(x).any(axis=1)
    return x[rows] if rows.any() else x
