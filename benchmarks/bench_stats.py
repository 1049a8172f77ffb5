"""What the honest intervals cost, and how they differ from the old seed-only ones.

1. Wall time of `summary_tables` (all benchmark tables: two-way bootstrap per model and
   metric, paired comparisons, Holm) on per-user arrays shaped like a benchmark: 4 models
   (2 stochastic with 5 seeds, 2 deterministic with 1 run), 24 per-user metrics (6 families x
   4 cut-offs), for 100 test users (ml-100k) and 10,000 (ML-20M); against what the old
   tables computed (t-interval over seed means, Wilcoxon on seed-averaged users, Holm).
2. With `--results results/<name>`: per model, the old t-interval over seed means next to the
   new interval, for the benchmark's test metric, from its stored per-user arrays.

    python benchmarks/bench_stats.py
    python benchmarks/bench_stats.py --results /tmp/run/results/ml-100k

Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from harness.benchmark.stats import StatsSettings, bootstrap_ci, holm, mean_ci, paired_wilcoxon
from harness.benchmark.summary import ModelRun, summary_tables

FAMILIES = ("ndcg", "recall", "recall_std", "precision", "map", "hit")
KS = (10, 20, 50, 100)
MODELS = {"standard_vae": 5, "mult_vae": 5, "ease": 1, "popularity": 1}


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


def old_tables(runs: list[ModelRun]) -> None:
    """What the tables computed before: t over seed means, Wilcoxon on seed-averaged users."""
    for run in runs:
        for values in run.per_user.values():
            mean_ci(np.nanmean(values, axis=1))
    base = np.nanmean(runs[1].per_user["ndcg@100"], axis=0)
    p = [paired_wilcoxon(np.nanmean(r.per_user["ndcg@100"], axis=0), base).p_value for r in runs]
    holm(p)


def time_tables(n_users: int, new: bool, repeats: int) -> float:
    runs = fake_runs(n_users)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        if new:
            summary_tables(runs, baseline="mult_vae", stats=StatsSettings())
        else:
            old_tables(runs)
        best = min(best, time.perf_counter() - start)
    return best


def old_vs_new(results: Path) -> None:
    info = json.loads((results / "benchmark.json").read_text())
    metric = info.get("test_metric", "ndcg@100")
    settings = info.get("settings", {})
    stats = StatsSettings(
        confidence=settings.get("confidence", 0.95),
        n_resamples=settings.get("n_resamples", 2000),
        seed=settings.get("stats_seed", 0),
    )
    print(f"\n{results} ({info['n_test_users']} test users, seeds {info['seeds']}), {metric}:")
    print(f"{'model':<14} {'old: t over seed means':<32} {'new: bootstrap users x seeds':<32}")
    for model, record in info["models"].items():
        with np.load(results / "per_user" / f"{model}.npz") as data:
            values = data[metric]
        stochastic = not record.get("deterministic", False)
        seed_means = np.nanmean(values, axis=1)
        if not stochastic:  # the old benchmark repeated the one run for every seed
            seed_means = np.repeat(seed_means, info["n_seeds"])
        old = mean_ci(seed_means)
        new = bootstrap_ci(values, stochastic=stochastic, settings=stats)
        print(
            f"{model:<14} {old.mean:.4f} [{old.low:.4f}, {old.high:.4f}] w={old.high - old.low:.4f}"
            f"   {new.mean:.4f} [{new.low:.4f}, {new.high:.4f}] w={new.high - new.low:.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="a benchmark folder: old vs new intervals")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("summary_tables wall time (best of repeats; 4 models, 24 per-user metrics):")
    for n_users in (100, 10_000):
        old = time_tables(n_users, False, args.repeats)
        new = time_tables(n_users, True, args.repeats)
        print(
            f"  {n_users:>6} test users: old (t over seeds) {old:6.2f} s, new (bootstrap, "
            f"2000 resamples) {new:6.2f} s, added {new - old:6.2f} s"
        )
    if args.results:
        old_vs_new(args.results)


if __name__ == "__main__":
    main()
