"""Sweep benchmarks: what pruning saves, and what the harness costs per trial.

1. The same small StandardVAE study on synthetic data, with and without the median pruner:
   best validation NDCG@100 and total epochs trained for each (aim: pruning trains at most half
   the epochs for a best NDCG within 1% of the unpruned study).
2. Harness overhead per trial on ml-100k, as a share of trial wall time: storage writes (ask,
   tell, per-epoch report/should_prune, user attrs) and validation evaluation (NDCG@100 after
   every epoch). Aim: under 5%.

    python benchmarks/bench_sweep.py                # both parts
    python benchmarks/bench_sweep.py --part pruning --trials 12 --epochs 15

Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from harness.data import default_cache_dir, load_interactions, make_split  # noqa: E402
from harness.sweep import SweepSettings, run_sweep  # noqa: E402

SPACE = {
    "learning_rate": "tag(log, interval(1e-4, 3e-2))",
    "latent_dim": "tag(log, interval(8, 128))",
    "intermediate_dim": "choice(64, 128, 256)",
    "drop_encoder": "interval(0.0, 0.8)",
    "beta": "interval(0.05, 1.0)",
}


def pruning(trials: int, epochs: int, results: Path, pruners: list[str]) -> None:
    """Part 1: one study per pruner on the same synthetic split and seed ("none" first)."""
    frame = load_interactions("synthetic", n_users=3000, n_items=1000, density=0.02, seed=0)
    split = make_split(frame, n_val_users=300, n_test_users=300, cache_dir=default_cache_dir())
    model = {"name": "standard_vae", "n_epochs": epochs, "batch_size": 100, "k": 100, "seed": 0}
    print(f"synthetic: {split.summary()}")
    print(f"{trials} trials x up to {epochs} epochs, TPE seed 0, n_startup_trials 5")
    rows = {}
    for pruner in ["none", *[p for p in pruners if p != "none"]]:
        settings = SweepSettings(
            n_trials=trials,
            pruner=pruner,
            quiet=True,
            study_name=f"bench-{pruner}",
            n_startup_trials=5,
            n_warmup_epochs=3,
        )
        start = time.perf_counter()
        study = _run(split, "synthetic", model, SPACE, settings, results)
        finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        rows[pruner] = (
            max(t.value for t in finished if t.state == TrialState.COMPLETE),
            sum(t.user_attrs["epochs_run"] for t in finished),
            sum(t.state == TrialState.PRUNED for t in finished),
            time.perf_counter() - start,
        )
    print(f"{'pruner':<8} {'best ndcg@100':>14} {'epochs':>7} {'pruned':>7} {'wall s':>8}")
    for pruner, (best, total, pruned, wall) in rows.items():
        print(f"{pruner:<8} {best:>14.4f} {total:>7d} {pruned:>7d} {wall:>8.1f}")
    best_none, epochs_none, *_ = rows["none"]
    for pruner, (best, total, *_) in rows.items():
        if pruner != "none":
            print(
                f"{pruner}: {total / epochs_none:.0%} of the epochs of no pruning, best NDCG "
                f"{(best - best_none) / best_none:+.2%}"
            )


def overhead(trials: int, epochs: int, results: Path) -> None:
    """Part 2: per-trial harness overhead on ml-100k (time spent outside training)."""
    import harness.models.callbacks as callbacks
    import harness.sweep.runner as runner

    split = make_split(load_interactions("ml-100k"), cache_dir=default_cache_dir())
    print(f"ml-100k: {split.summary()}")
    spent: dict[str, float] = defaultdict(float)
    patches = [
        (optuna.trial.Trial, "report", "storage"),
        (optuna.trial.Trial, "should_prune", "storage"),
        (optuna.trial.Trial, "set_user_attr", "storage"),
        (callbacks.Metrics, "validation_ndcg", "evaluation"),
        (runner, "objective", "objective"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, bucket in patches:
        setattr(owner, name, _timed(getattr(owner, name), spent, bucket))
    try:
        model = {"name": "standard_vae", "n_epochs": epochs, "k": 100, "seed": 0}
        settings = SweepSettings(n_trials=trials, pruner="none", quiet=True, study_name="bench")
        study = _run(split, "ml-100k", model, SPACE, settings, results)
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    wall = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials)
    outside = wall - spent["objective"]  # ask/tell and storage round trips around the objective
    storage = outside + spent["storage"]
    n_epochs = sum(t.user_attrs["epochs_run"] for t in study.trials)
    print(f"{trials} trials, {n_epochs} epochs, trial wall time {wall:.1f} s in total")
    print(f"storage writes:      {storage:7.2f} s = {storage / wall:6.2%} of trial wall time")
    print(
        f"validation NDCG@100: {spent['evaluation']:7.2f} s = "
        f"{spent['evaluation'] / wall:6.2%} of trial wall time"
    )
    total = storage + spent["evaluation"]
    print(f"harness overhead:    {total:7.2f} s = {total / wall:6.2%} of trial wall time")


def _run(split, dataset, model, space, settings, results) -> optuna.Study:
    return run_sweep(
        split=split,
        dataset_name=dataset,
        model_name="standard_vae",
        model_params=model,
        search_space=space,
        settings=settings,
        results_dir=results,
    )


def _timed(func: Callable, spent: dict[str, float], bucket: str) -> Callable:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            spent[bucket] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("pruning", "overhead", "both"), default="both")
    parser.add_argument("--trials", type=int, default=16, help="trials per pruning study")
    parser.add_argument("--epochs", type=int, default=20, help="max epochs per trial")
    parser.add_argument("--overhead-trials", type=int, default=4)
    parser.add_argument(
        "--pruners", nargs="+", default=["median", "successive_halving", "hyperband"]
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        if args.part in ("pruning", "both"):
            pruning(args.trials, args.epochs, Path(tmp), args.pruners)
        if args.part in ("overhead", "both"):
            overhead(args.overhead_trials, args.epochs, Path(tmp))


if __name__ == "__main__":
    main()
