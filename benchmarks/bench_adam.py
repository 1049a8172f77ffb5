"""Does the written-out Adam update (``VAENetwork._apply_gradients``) pay for itself?

Times sweep-like trials on ml-100k with the network's own Adam update against Keras'
``optimizer.apply`` (the two give bit-identical weights: tests/test_models_loop.py). A trial
is what a sweep worker does per trial: build a fresh model with the conf's defaults (200-70,
batch 100, 50-epoch settings: no XLA Adam) and fit it. Per (model, update) it reports the
median over ``--repeats`` trials of: the first epoch (tracing included), the median epoch
after it, and the whole trial (build + fit). Wall and CPU seconds. The two updates
alternate inside one process per model (after one discarded warm-up trial of each), so
machine load and process warm-up hit both alike. Prints figures, asserts nothing.

Usage: python benchmarks/bench_adam.py [--epochs 50] [--repeats 3] [--models standard_vae mult_vae]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

UPDATES = ("written-out", "keras-apply")


def ml100k():
    """The harness's ml-100k split (strong generalisation, default protocol)."""
    from harness.data import load_interactions, make_split

    split = make_split(load_interactions("ml-100k"))
    return split.train, split.val_tr, split.val_te


def trial(data, model_name: str, update: str, n_epochs: int, seed: int) -> dict:
    """Build and fit one model as a sweep trial does; seconds of its phases."""
    import tensorflow as tf

    from harness.models import build_model

    train, val_tr, val_te = data
    wall, cpu = [time.perf_counter()], [time.process_time()]
    model = build_model(model_name, train.shape[0], train.shape[1], intermediate_dim=200,
                        latent_dim=70, batch_size=100, verbose=0, seed=seed, n_epochs=50,
                        annealing=True, anneal_cap=0.2)  # fmt: skip
    model.n_epochs = n_epochs
    if update == "keras-apply":  # as tests/test_models_loop.py: before anything is traced
        net = model.network
        net.apply_gradients = tf.function(
            lambda grads: net.optimizer.apply(grads, net.trainable_weights),
            jit_compile=net.xla_optimizer,
        )

    def stamp(epoch: int, logs: dict) -> None:
        wall.append(time.perf_counter())
        cpu.append(time.process_time())

    model.fit(train, None, val_tr, val_te, epoch_callback=stamp)
    best = float(model.best_ndcg)
    from harness.devices import free_model_memory

    del model
    free_model_memory()  # as the sweep objective does after each trial
    return {
        "first_epoch": wall[1] - wall[0],
        "first_epoch_cpu": cpu[1] - cpu[0],
        "epoch": float(np.median(np.diff(wall)[1:])),
        "epoch_cpu": float(np.median(np.diff(cpu)[1:])),
        "trial": wall[-1] - wall[0],
        "trial_cpu": cpu[-1] - cpu[0],
        "best_ndcg": best,
    }


def run_model(model_name: str, n_epochs: int, repeats: int) -> dict:
    data = ml100k()
    for update in UPDATES:  # warm-up: the process's first model pays one-off costs
        trial(data, model_name, update, 2, seed=0)
    runs: dict[str, list[dict]] = {u: [] for u in UPDATES}
    for r in range(repeats):
        order = UPDATES if r % 2 == 0 else UPDATES[::-1]
        for update in order:
            runs[update].append(trial(data, model_name, update, n_epochs, seed=1 + r))
    return {
        update: {key: float(np.median([run[key] for run in rs])) for key in rs[0]}
        | {"best_ndcg_all": [run["best_ndcg"] for run in rs]}
        for update, rs in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["standard_vae", "mult_vae"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_model(args.one, args.epochs, args.repeats)))
        return
    print(f"ml-100k, {args.epochs} epochs per trial, median of {args.repeats} trials per cell")
    print(f"{'model':>12} {'update':>12} {'first epoch':>18} {'later epoch':>18} {'trial':>18}")
    for model in args.models:
        cmd = [sys.executable, __file__, "--one", model, "--epochs", str(args.epochs),
               "--repeats", str(args.repeats)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        for update in UPDATES:
            r = result[update]
            print(
                f"{model:>12} {update:>12} "
                f"{r['first_epoch']:7.3f} s ({r['first_epoch_cpu']:6.3f} cpu) "
                f"{r['epoch']:7.4f} s ({r['epoch_cpu']:6.4f} cpu) "
                f"{r['trial']:7.2f} s ({r['trial_cpu']:6.2f} cpu)"
            )
        w, k = result["written-out"], result["keras-apply"]
        print(
            f"{'':>12} {'saving':>12} {k['first_epoch'] - w['first_epoch']:+7.3f} s"
            f"{'':>14}{k['epoch'] - w['epoch']:+7.4f} s{'':>14}{k['trial'] - w['trial']:+7.2f} s"
            f"  ({100 * (k['trial'] - w['trial']) / k['trial']:+.1f}% of a trial)"
        )
        same = w["best_ndcg_all"] == k["best_ndcg_all"]
        print(f"{'':>12} best NDCG@100 identical across updates: {same}")


if __name__ == "__main__":
    main()
