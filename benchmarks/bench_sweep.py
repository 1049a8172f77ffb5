"""Sweep benchmarks: what pruning saves, and what the harness costs per trial.

1. The same small StandardVAE study on synthetic data, with and without the median pruner:
   best validation NDCG@100 and total epochs trained for each (aim: pruning trains at most half
   the epochs for a best NDCG within 1% of the unpruned study).
2. Harness overhead per trial on ml-100k, as a share of trial wall time: storage writes (ask,
   tell, per-epoch report/should_prune, user attrs) and validation evaluation (NDCG@100 after
   every epoch). Aim: under 5%.
3. Throughput: the same Mult-VAE sweep on ml-100k (16 trials x 30 epochs, no pruning) with one
   worker and with the default (`sweep.n_workers=auto`), trials per minute and the ratio, in
   one run (aim on 2 cores: >= 1.6x). Timed from the call, worker start-up included; both
   use the default's batch size, so they train the same trials.
4. Memory: a long Mult-VAE sweep on ml-100k (e.g. 500 trials x 2 epochs) with the default
   workers; each worker's resident memory after every trial, with worker recycling
   (`sweep.recycle_after`, default 100) and the growth per trial within one process.

    python benchmarks/bench_sweep.py                # parts 1-3
    python benchmarks/bench_sweep.py --part pruning --trials 12 --epochs 15
    python benchmarks/bench_sweep.py --part throughput --tp-trials 16 --tp-epochs 30
    python benchmarks/bench_sweep.py --part memory --mem-trials 500 --mem-epochs 2

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
from harness.execution import ExecutorSettings, make_executor  # noqa: E402
from harness.sweep import SweepSettings, run_sweep  # noqa: E402

MULT_SPACE = {
    "intermediate_dim": "choice(100, 200, 400, 600)",
    "latent_dim": "tag(log, interval(16, 256))",
    "learning_rate": "tag(log, interval(1e-4, 1e-2))",
    "batch_size": "choice(50, 100, 250, 500)",
    "drop_encoder": "interval(0.0, 0.8)",
    "anneal_cap": "interval(0.05, 1.0)",
}
MULT_MODEL = {"name": "mult_vae", "annealing": True, "k": 100, "drop_decoder": 0.0}
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
        # In-process trials (one storage-coordinated worker), so the timers above see them.
        settings = SweepSettings(
            n_trials=trials,
            pruner="none",
            quiet=True,
            study_name="bench",
            n_workers=1,
            coordination="storage",
        )
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


def throughput(trials: int, epochs: int, results: Path, batch_size: int | None = None) -> None:
    """Part 3: the same sweep with 1 worker and with the default parallel setting."""
    split = make_split(load_interactions("ml-100k"), cache_dir=default_cache_dir())
    model = {**MULT_MODEL, "n_epochs": epochs}
    default = SweepSettings()
    layout = default.worker_layout()
    window = batch_size or default.window(layout.n_workers)
    print(f"ml-100k Mult-VAE, {trials} trials x {epochs} epochs, no pruning, seed 0")
    rows = {}
    # The 1-worker run uses the default's batch size, so both train exactly the same trials.
    print(f"batch_size={window} for both (the same trials)")
    runs = (("1 worker", 1, "tp-1"), (f"auto ({layout.n_workers} workers)", "auto", "tp-auto"))
    for label, n_workers, study_name in runs:
        settings = SweepSettings(
            n_trials=trials,
            pruner="none",
            quiet=True,
            n_workers=n_workers,
            batch_size=window,
            study_name=study_name,
        )
        start = time.perf_counter()
        study = _run(split, "ml-100k", model, MULT_SPACE, settings, results, "mult_vae")
        wall = time.perf_counter() - start
        values = [t.value for t in study.trials]
        rows[label] = (wall, trials / wall * 60, max(values))
    print(f"{'workers':<18} {'wall s':>8} {'trials/min':>11} {'best ndcg@100':>14}")
    for label, (wall, rate, best) in rows.items():
        print(f"{label:<18} {wall:>8.1f} {rate:>11.2f} {best:>14.4f}")
    (one, *_), (auto, *_) = rows.values()
    print(f"throughput ratio (default / 1 worker): {one / auto:.2f}x")


def memory(trials: int, epochs: int, results: Path, recycle_after: int | None) -> None:
    """Part 4: per-worker resident memory over a long sweep, printed every 50 trials.

    The sweep is resumed in chunks of 50 trials (the pool, and its recycling, carry on across
    chunks), so a long run shows its figures as it goes.
    """
    split = make_split(load_interactions("ml-100k"), cache_dir=default_cache_dir())
    model = {**MULT_MODEL, "n_epochs": epochs}
    executor = make_executor(ExecutorSettings(recycle_after=recycle_after), split)
    print(f"ml-100k Mult-VAE, {trials} trials x {epochs} epochs, recycle_after={recycle_after}")
    print(f"{'trials':>7} {'wall s':>7} {'worker':>7} {'processes':>10} {'RSS first':>10} "
          f"{'RSS max':>8} {'RSS last':>9} {'MiB/trial in a process':>23}")  # fmt: skip
    start = time.perf_counter()
    for done in range(min(50, trials), trials + 50, 50):
        done = min(done, trials)
        settings = SweepSettings(
            n_trials=done, pruner="none", quiet=True, recycle_after=recycle_after, study_name="mem"
        )
        _run(split, "ml-100k", model, MULT_SPACE, settings, results, "mult_vae", executor)
        pool = executor.pool  # the same workers across chunks
        by_slot: dict[int, list] = defaultdict(list)
        for record in pool.memory:
            by_slot[record.slot].append(record)
        for slot, recs in sorted(by_slot.items()):
            growth = []
            for pid in dict.fromkeys(r.pid for r in recs):
                own = [r for r in recs if r.pid == pid]
                if len(own) > 1:
                    growth.append((own[-1].rss_mb - own[0].rss_mb) / (len(own) - 1))
            rss = [r.rss_mb for r in recs]
            slope = sum(growth) / len(growth) if growth else float("nan")
            print(
                f"{done:>7} {time.perf_counter() - start:>7.0f} {slot:>7} "
                f"{len({r.pid for r in recs}):>10} {rss[0]:>10.0f} {max(rss):>8.0f} "
                f"{rss[-1]:>9.0f} {slope:>23.2f}",
                flush=True,
            )
        if done >= trials:
            break
    executor.close()


def _run(
    split, dataset, model, space, settings, results, name="standard_vae", executor=None
) -> optuna.Study:
    return run_sweep(
        split=split,
        dataset_name=dataset,
        model_name=name,
        model_params=model,
        search_space=space,
        settings=settings,
        results_dir=results,
        executor=executor,
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
    parser.add_argument(
        "--part",
        choices=("pruning", "overhead", "throughput", "memory", "both", "all"),
        default="all",
        help="both = pruning + overhead; all = parts 1-3 (memory takes long: ask for it)",
    )
    parser.add_argument("--trials", type=int, default=16, help="trials per pruning study")
    parser.add_argument("--epochs", type=int, default=20, help="max epochs per trial")
    parser.add_argument("--overhead-trials", type=int, default=4)
    parser.add_argument("--tp-trials", type=int, default=16, help="throughput: trials")
    parser.add_argument("--tp-epochs", type=int, default=30, help="throughput: epochs")
    parser.add_argument(
        "--tp-batch", type=int, default=None, help="throughput: sweep.batch_size (default's)"
    )
    parser.add_argument("--mem-trials", type=int, default=500, help="memory: trials")
    parser.add_argument("--mem-epochs", type=int, default=2, help="memory: epochs")
    parser.add_argument(
        "--recycle-after", type=int, default=100, help="memory: sweep.recycle_after, 0 = never"
    )
    parser.add_argument(
        "--pruners", nargs="+", default=["median", "successive_halving", "hyperband"]
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        if args.part in ("pruning", "both", "all"):
            pruning(args.trials, args.epochs, Path(tmp), args.pruners)
        if args.part in ("overhead", "both", "all"):
            overhead(args.overhead_trials, args.epochs, Path(tmp))
        if args.part in ("throughput", "all"):
            throughput(args.tp_trials, args.tp_epochs, Path(tmp), args.tp_batch)
        if args.part == "memory":
            memory(args.mem_trials, args.mem_epochs, Path(tmp), args.recycle_after or None)


if __name__ == "__main__":
    main()
