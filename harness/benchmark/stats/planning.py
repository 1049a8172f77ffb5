"""Planning a comparison before running it: variance components stated or estimated from a
pilot (`VarianceComponents`), the minimum detectable difference they give for planned numbers
of users, seeds and folds (`detectable_difference`), and the users a margin needs
(`users_needed`). The variance formula is the expected value of what `compare` estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from harness.benchmark.stats.components import (
    check_seeds,
    clean_runs,
    complete_users,
    fold_layout,
    kept_folds,
    mean_squares,
)
from harness.benchmark.stats.settings import POWER, StatsConfigError


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
        a, b = clean_runs(model), clean_runs(baseline)
        keep = complete_users(a, b)
        a, b = a[:, keep], b[:, keep]
        fold_ids = kept_folds(folds, keep)
        f = fold_layout(fold_ids, a.shape[1])
        seed, resid, user, e_over_s = [], [], [], 0.0
        for x, noisy in ((a, model_stochastic), (b, baseline_stochastic)):
            ms = mean_squares(x[None], f)
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
