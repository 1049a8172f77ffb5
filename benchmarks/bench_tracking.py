"""MLflow overhead per trial on ml-100k: seconds spent logging a trial (params, per-epoch
step metrics, tags) as a share of the trial's wall time. Aim: under 2%.

A Mult-VAE study with the MLflow callback on a SQLite tracking store; the callback is timed
directly (the same trial wall time with and without it would be a noisier difference of two
sweeps). The first call also creates the experiment; it is reported apart.

    python benchmarks/bench_tracking.py                 # 6 trials x 50 epochs
    python benchmarks/bench_tracking.py --trials 3 --epochs 20

Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.data import default_cache_dir, load_interactions, make_split
from harness.sweep import SweepSettings, run_sweep
from harness.tracking import TrackingSettings, check_tracking, make_callbacks


class Timed:
    """Wraps a callback and records how long each call took."""

    def __init__(self, callback):
        self.callback, self.seconds = callback, []

    def __call__(self, study, trial):
        start = time.perf_counter()
        self.callback(study, trial)
        self.seconds.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()

    ratings = load_interactions("ml-100k", data_dir=default_cache_dir(), progress=False)
    split = make_split(ratings, cache_dir=default_cache_dir())
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        start = time.perf_counter()
        (callback,) = make_callbacks(check_tracking(TrackingSettings(mlflow_uri=uri)))
        setup = time.perf_counter() - start
        timed = Timed(callback)
        study = run_sweep(
            split=split,
            dataset_name="ml-100k",
            model_name="mult_vae",
            model_params={"n_epochs": args.epochs},
            search_space={
                "anneal_cap": "interval(0.05, 1.0)",
                "learning_rate": "tag(log, interval(1e-4, 1e-2))",
            },
            settings=SweepSettings(n_trials=args.trials, pruner="none", quiet=True),
            results_dir=tmp,
            callbacks=[timed],
        )
        walls = [t.user_attrs["wall_seconds"] for t in study.trials]
    later = timed.seconds[1:] or timed.seconds
    share = statistics.mean(later) / statistics.mean(walls[1:] or walls)
    print(f"ml-100k Mult-VAE, {args.trials} trials x {args.epochs} epochs, SQLite MLflow store")
    print(f"store check + creation before the sweep: {setup:.2f} s (once)")
    print(f"trial wall time: mean {statistics.mean(walls):.2f} s")
    print(
        f"MLflow logging per trial: first {timed.seconds[0]:.3f} s (creates the experiment), "
        f"then mean {statistics.mean(later):.3f} s"
    )
    print(f"overhead per trial: {100 * share:.2f}% of trial time (aim < 2%)")


if __name__ == "__main__":
    main()
