"""Calibration of `harness.benchmark.stats` by null simulation (seeded, vectorised).

Each regime simulates 1,000 benchmark-shaped data sets at once and runs them through
`compare_batch` / `interval_batch`, the very code `compare` and `model_interval` run with a
batch of one. Per-user values of a model (seed s, user u):

    Y[s, u] = user effect a_u (shared by both models: the pairing)
            + per-model user effect g_u (user x model interaction; 0 unless stated)
            + per-model run effect b_s (each model its own seeds; per fold with folds)
            + user x seed noise e_su
            (+ a fold effect shared by both models, with folds)

A deterministic model has one run and no b_s. Under the null both models have the same mean.
At level 0.05 with 1,000 simulations the binomial standard error of a rejection rate is 0.007,
so [0.03, 0.07] is about +-3 standard errors around 0.05 (coverage: [0.93, 0.97]).
`benchmarks/bench_stats.py` prints the same regimes as a table (with the old bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from harness.benchmark.stats import (
    VarianceComponents,
    compare_batch,
    detectable_difference,
    interval_batch,
)

N_SIM = 1000
ALPHA = 0.05


@dataclass(frozen=True)
class Regime:
    """One simulated benchmark: standard deviations of the effects and the design."""

    name: str
    n_users: int
    n_seeds: int = 5
    user: float = 0.2  # sd of the shared user effect a_u
    seed: float = 0.002  # sd of a run effect b_s
    noise: float = 0.02  # sd of the user x seed interaction e_su
    user_model: float = 0.0  # sd of the per-model user effect g_u
    deterministic_baseline: bool = False
    n_folds: int = 1
    fold: float = 0.0  # sd of a fold effect shared by both models (conditioned on)
    seed_ratio: float = 1.0  # baseline's run-effect sd / the model's
    fold_sizes: tuple[int, ...] | None = None  # users per fold (None: as equal as possible)

    @property
    def codes(self) -> np.ndarray:
        """Fold id per user column."""
        if self.fold_sizes is not None:
            assert len(self.fold_sizes) == self.n_folds and sum(self.fold_sizes) == self.n_users
            return np.repeat(np.arange(self.n_folds), self.fold_sizes)
        return np.arange(self.n_users) % self.n_folds

    @property
    def folds(self) -> np.ndarray | None:
        return None if self.n_folds == 1 else self.codes

    def components(self) -> VarianceComponents:
        """The true variance components (for the planned detectable difference)."""
        return VarianceComponents(
            seed=self.seed**2, residual=self.noise**2, user_model=2 * self.user_model**2
        )


REGIMES = {
    r.name: r
    for r in (
        Regime("user-dominated", 100),
        Regime("seed-dominated", 1000, seed=0.01),
        Regime("interaction-dominated", 100, user=0.05, seed=0.001, noise=0.1),
        Regime("deterministic baseline", 100, seed=0.01, noise=0.05, deterministic_baseline=True),
        Regime("2 seeds", 100, n_seeds=2, seed=0.005, noise=0.05),
        Regime("10 seeds", 100, n_seeds=10, seed=0.005, noise=0.05),
        Regime("user x model", 100, seed=0.003, noise=0.05, user_model=0.03),
        Regime("5 folds", 500, seed=0.005, noise=0.05, n_folds=5, fold=0.05),
        Regime(
            "5 unequal folds",
            1000,
            seed=0.01,
            noise=0.05,
            n_folds=5,
            fold=0.05,
            fold_sizes=(50, 100, 150, 200, 500),
        ),
        Regime(
            "5 folds, deterministic baseline",
            500,
            seed=0.005,
            noise=0.05,
            n_folds=5,
            fold=0.05,
            deterministic_baseline=True,
        ),
    )
}
# the pooled run variance assumes similar seed noise; how much a 4x variance ratio costs
HETEROGENEOUS = Regime("seed variance 4x", 1000, seed=0.01, seed_ratio=0.5)
# a known limit (printed by bench_stats, not asserted): one model's interval from 2 seeds when
# its seed variance dominates undercovers (Satterthwaite df from a 1-df mean square)
TWO_SEEDS_SEED_DOMINATED = Regime("2 seeds, seed-dominated", 1000, n_seeds=2, seed=0.02)


def simulate(
    regime: Regime, n_sim: int, rng: np.random.Generator, shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(model, baseline, true model mean): arrays (n_sim, n_seeds, n_users); the model's
    expected value is ``shift`` above the baseline's. The true mean of the model is the one
    the intervals condition on (its fold effects; 0 otherwise)."""
    n, s, k = regime.n_users, regime.n_seeds, regime.n_folds
    codes = regime.codes
    shared = rng.normal(0.0, regime.user, (n_sim, 1, n))
    fold = rng.normal(0.0, regime.fold, (n_sim, 1, k))[:, :, codes] if regime.fold else 0.0
    shared = shared + fold

    def runs(n_runs: int, seed_sd: float) -> np.ndarray:
        own = rng.normal(0.0, regime.user_model, (n_sim, 1, n)) if regime.user_model else 0.0
        run = rng.normal(0.0, seed_sd, (n_sim, n_runs, k))[:, :, codes] if seed_sd else 0.0
        return shared + own + run + rng.normal(0.0, regime.noise, (n_sim, n_runs, n))

    model = runs(s, regime.seed) + shift
    if regime.deterministic_baseline:
        baseline = runs(1, 0.0)
    else:
        baseline = runs(s, regime.seed * regime.seed_ratio)
    truth = (fold.mean(axis=(1, 2)) if regime.fold else np.zeros(n_sim)) + shift
    return model, baseline, truth


def run_regime(
    regime: Regime, n_sim: int = N_SIM, seed: int = 0, shift: float = 0.0, margin: float = 0.0
):
    """Simulate and compare: (comparisons, the model's intervals, true model means)."""
    rng = np.random.default_rng(seed)
    model, baseline, truth = simulate(regime, n_sim, rng, shift)
    result = compare_batch(
        model,
        baseline,
        model_stochastic=True,
        baseline_stochastic=not regime.deterministic_baseline,
        folds=regime.folds,
        confidence=1 - ALPHA,
        margin=margin,
    )
    interval = interval_batch(model, stochastic=True, folds=regime.folds, confidence=1 - ALPHA)
    return result, interval, truth


def calibration_row(regime: Regime, n_sim: int = N_SIM, seed: int = 0) -> dict[str, float]:
    """Type-I error of the paired test, coverage of the difference's interval (of 0) and of
    the model's own interval (of its true mean), median df."""
    result, interval, truth = run_regime(regime, n_sim, seed)
    return {
        "type_i": float(np.mean(result.p_value < ALPHA)),
        "coverage": float(np.mean((result.ci_low <= 0) & (0 <= result.ci_high))),
        "model_coverage": float(np.mean((interval.low <= truth) & (truth <= interval.high))),
        "df": float(np.median(result.df)),
    }


@pytest.mark.parametrize("name", list(REGIMES))
def test_null_type_i_error_and_coverage_are_nominal(name):
    row = calibration_row(REGIMES[name], seed=sum(map(ord, name)))
    assert 0.03 <= row["type_i"] <= 0.07, row
    assert 0.93 <= row["coverage"] <= 0.97, row
    assert 0.93 <= row["model_coverage"] <= 0.97, row


def test_unequal_seed_variances_stay_close_to_the_level():
    # the seed mean squares of the two models are pooled (one run variance, as a mixed model
    # with a model:seed random effect assumes); with a 4x variance ratio the level holds
    row = calibration_row(HETEROGENEOUS, seed=5)
    assert 0.03 <= row["type_i"] <= 0.07, row


@pytest.mark.parametrize("name", ["user-dominated", "seed-dominated", "5 folds"])
def test_power_at_the_planned_detectable_difference_is_80_percent(name):
    # the planned detectable difference from the true components; the exact power of a t-test
    # with the planned df (8 with 5 seeds per model) at it is 0.799 (noncentral t), so the
    # simulated power should be 0.8 up to Monte Carlo error: sd sqrt(0.8 * 0.2 / 1000) =
    # 0.013, and +-0.04 is about 3 sd
    regime = REGIMES[name]
    delta = detectable_difference(
        regime.components(),
        n_users=regime.n_users,
        n_seeds_model=regime.n_seeds,
        n_seeds_baseline=regime.n_seeds,
        alpha=ALPHA,
        n_folds=regime.n_folds,
    )
    result, _, _ = run_regime(regime, seed=11, shift=delta)
    power = float(np.mean(result.p_value < ALPHA))
    assert abs(power - 0.8) <= 0.04, (delta, power)
    # the detectable difference estimated from each data set agrees with the planned one
    assert np.median(result.mdd) == pytest.approx(delta, rel=0.1)


def test_tost_declares_equivalence_at_most_alpha_of_the_time_at_the_margin():
    regime = REGIMES["user-dominated"]
    null, _, _ = run_regime(regime, seed=21)
    margin = float(4 * np.median(null.se))  # wide enough that equivalence is often reachable
    at_margin, _, _ = run_regime(regime, seed=22, shift=margin, margin=margin)
    rate = float(np.mean(at_margin.p_equivalence < ALPHA))
    assert rate <= 0.07, rate  # alpha + 3 binomial sd
    inside, _, _ = run_regime(regime, seed=23, shift=0.0, margin=margin)
    assert np.mean(inside.p_equivalence < ALPHA) > 0.5  # and it does decide when it can
    # TOST at level alpha is the (1 - 2 alpha) interval inside the margin
    assert np.all((inside.p_equivalence < ALPHA) <= (np.abs(inside.mean_difference) < margin))
