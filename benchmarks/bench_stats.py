"""Calibration of the benchmark's statistics, and what they cost.

1. The calibration table: per simulated regime (tests/test_stats_calibration.py: a user
   effect shared by both models + a per-model run effect + user x seed noise; null of equal
   means), the type-I error of the paired test at level 0.05, the coverage of the
   difference's 95% interval and of one model's own interval, and the median Satterthwaite df
   of the variance-components method (users x seeds crossed), next to the old two-way
   bootstrap (users and seeds resampled) and the old sign-flip permutation test, which the
   method replaced (fewer simulations: they resample).
2. Wall time of `summary_tables` (all benchmark tables) on per-user arrays shaped like a
   benchmark: 4 models (2 stochastic with 5 seeds, 2 deterministic), 24 per-user metrics.

    python benchmarks/bench_stats.py                  # both, 1,000 / 200 simulations
    python benchmarks/bench_stats.py --old-sims 0     # without the old methods

Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

from harness.benchmark.stats import StatsSettings
from harness.benchmark.summary import ModelRun, summary_tables

_SPEC = importlib.util.spec_from_file_location(
    "calibration", Path(__file__).resolve().parents[1] / "tests" / "test_stats_calibration.py"
)
cal = importlib.util.module_from_spec(_SPEC)
sys.modules["calibration"] = cal  # dataclasses look their module up
_SPEC.loader.exec_module(cal)

FAMILIES = ("ndcg", "recall", "recall_std", "precision", "map", "hit")
KS = (10, 20, 50, 100)
MODELS = {"standard_vae": 5, "mult_vae": 5, "ease": 1, "popularity": 1}


# --- the old methods (as in harness/benchmark/stats.py before the variance components) -------


def _user_counts(rng: np.random.Generator, b: int, n_users: int) -> np.ndarray:
    picks = rng.integers(0, n_users, size=(b, n_users))
    offsets = (np.arange(b) * n_users)[:, None]
    counts = np.bincount((picks + offsets).ravel(), minlength=b * n_users)
    return counts.reshape(b, n_users).astype(np.float64)


def _seed_weights(rng: np.random.Generator, b: int, n_seeds: int) -> np.ndarray:
    pick = rng.integers(0, n_seeds, size=(b, n_seeds))
    offsets = (np.arange(b) * n_seeds)[:, None]
    counts = np.bincount((pick + offsets).ravel(), minlength=b * n_seeds)
    return counts.reshape(b, n_seeds) / n_seeds


def old_bootstrap(a, b, stoch_b, n_resamples, rng):
    """Two-way bootstrap of the paired mean difference: (p-value, covers 0)."""
    n = a.shape[1]
    w = _user_counts(rng, n_resamples, n) / n
    reps = []
    for x, noisy in ((a, True), (b, stoch_b)):
        seed_means = w @ x.T  # (B, seeds)
        if noisy and x.shape[0] > 1:
            reps.append((seed_means * _seed_weights(rng, n_resamples, x.shape[0])).sum(axis=1))
        else:
            reps.append(seed_means.mean(axis=1))
    d_star = reps[0] - reps[1]
    diff = a.mean() - b.mean()
    low, high = np.quantile(d_star, [0.025, 0.975])
    p = (1 + np.sum(np.abs(d_star - diff) >= abs(diff) - 1e-15)) / (n_resamples + 1)
    return p, low <= 0 <= high


def old_permutation(a, b, n_resamples, rng):
    """Sign-flip permutation test of the seed-averaged per-user differences: p-value."""
    d = a.mean(axis=0) - b.mean(axis=0)
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, d.size))
    null = np.abs((signs * d).mean(axis=1))
    return (1 + np.sum(null >= abs(d.mean()) - 1e-15)) / (n_resamples + 1)


def old_row(regime, n_sim: int, n_resamples: int = 500, seed: int = 0) -> tuple[float, ...]:
    if n_sim == 0 or regime.n_folds > 1:  # the old methods knew no folds
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    model, baseline, _ = cal.simulate(regime, n_sim, rng)
    boot = [
        old_bootstrap(a, b, not regime.deterministic_baseline, n_resamples, rng)
        for a, b in zip(model, baseline, strict=True)
    ]
    perm = [old_permutation(a, b, n_resamples, rng) for a, b in zip(model, baseline, strict=True)]
    p_boot = np.array([p for p, _ in boot])
    return (
        float(np.mean(p_boot < cal.ALPHA)),
        float(np.mean([c for _, c in boot])),
        float(np.mean(np.array(perm) < cal.ALPHA)),
    )


def calibration_table(n_sim: int, old_sims: int) -> None:
    regimes = [*cal.REGIMES.values(), cal.HETEROGENEOUS, cal.TWO_SEEDS_SEED_DOMINATED]
    print(
        f"Null calibration, level {cal.ALPHA}: new = variance components ({n_sim} simulations), "
        f"old = two-way bootstrap / sign-flip permutation ({old_sims} simulations, 500 "
        "resamples)"
    )
    header = (
        f"| {'regime':<32} | users | seeds   | type-I | coverage | model cov. | df   "
        "| old boot. type-I | old boot. coverage | old perm. type-I |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    start = time.perf_counter()
    for i, regime in enumerate(regimes):
        row = cal.calibration_row(regime, n_sim, seed=sum(map(ord, regime.name)))
        old = old_row(regime, old_sims, seed=i)
        seeds = f"{regime.n_seeds}/{1 if regime.deterministic_baseline else regime.n_seeds}"
        if regime.n_folds > 1:
            seeds += f" x{regime.n_folds}f"
        cells = "".join(
            f" | {'–' if np.isnan(v) else f'{v:.3f}':>{w}}"
            for v, w in zip(old, (16, 18, 16), strict=True)
        )
        print(
            f"| {regime.name:<32} | {regime.n_users:>5} | {seeds:>7} | {row['type_i']:6.3f} "
            f"| {row['coverage']:8.3f} | {row['model_coverage']:10.3f} | {row['df']:4.0f}{cells} |"
        )
    print(f"({time.perf_counter() - start:.1f} s; seeds m/b = model/baseline, xKf = K folds)")


def fake_runs(n_users: int, seed: int = 0) -> list[ModelRun]:
    """Benchmark-shaped per-user arrays: a user effect, a model effect and seed noise."""
    rng = np.random.default_rng(seed)
    user = rng.beta(2, 3, n_users)
    runs = []
    for i, (model, n_seeds) in enumerate(MODELS.items()):
        per_user = {}
        for family in FAMILIES:
            for k in KS:
                noise = rng.normal(0, 0.05, (n_seeds, n_users))
                per_user[f"{family}@{k}"] = np.clip(user + 0.01 * i + noise, 0, 1)
        seeds = [{"seed": s} for s in range(n_seeds)]
        info = {"deterministic": n_seeds == 1}
        runs.append(ModelRun(model, per_user, {"coverage@100": [0.3] * n_seeds}, seeds, info))
    return runs


def time_tables(repeats: int) -> None:
    print("\nsummary_tables wall time (best of repeats; 4 models, 24 per-user metrics):")
    for n_users in (100, 10_000):
        runs = fake_runs(n_users)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            summary_tables(runs, baseline="mult_vae", stats=StatsSettings())
            best = min(best, time.perf_counter() - start)
        print(f"  {n_users:>6} test users: {best:6.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=cal.N_SIM, help="simulations per regime")
    parser.add_argument("--old-sims", type=int, default=200, help="0 = skip the old methods")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    calibration_table(args.sims, args.old_sims)
    time_tables(args.repeats)


if __name__ == "__main__":
    main()
