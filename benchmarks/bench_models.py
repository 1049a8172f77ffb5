"""Training and validation speed of the VAEs; prints figures, asserts nothing.

For each VAE and dataset it reports seconds per training epoch, the achieved training FLOP
rate (dense-equivalent: forward + backward = 3 x 2 x batch x (items*inter + inter*latent*2 +
latent*inter + inter*items) per batch, the cost of a dense-input implementation) beside a
float32 2048 x 2048 matmul rate measured in the same process, the per-epoch validation
time for 10,000 users (NDCG@100 ranking and validation loss), and the process's peak
resident memory. On ml-100k it also times whole epochs of ``fit`` (training + validation)
for a model built as the harness builds it (50 epochs: no XLA Adam), wall and CPU seconds.
Each (dataset, model) runs in its own subprocess so peaks don't mix.

Datasets: (a) ml-100k through harness.data (skipped with a message if unavailable);
(b) an ML-20M-shaped synthetic matrix (136,677 x 20,108, ~10M clicks, Liang's sizes:
intermediate 600, latent 200, batch 500, 10,000 validation users). On (b) only
``--batches`` training batches are timed (after two warm-up batches) and the epoch time is
extrapolated to the full number of batches; the output says so.

Usage: python benchmarks/bench_models.py [--batches 20] [--only ml-20m-synthetic]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

ML20M_SHAPE = (136_677, 20_108)
ML20M_CLICKS = 10_000_000
N_HELDOUT = 10_000
MODELS = ("standard_vae", "mult_vae")


def synthetic_ml20m(seed: int = 0):
    """Train / val_tr / val_te CSR matrices of the ML-20M shape, Zipf item popularity."""
    rng = np.random.default_rng(seed)
    n_users, n_items = ML20M_SHAPE
    counts = np.clip(rng.lognormal(0, 1, n_users), 0, None)
    counts = np.clip(np.rint(counts / counts.sum() * ML20M_CLICKS * 1.2), 5, 3000).astype(int)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    cols = rng.choice(n_items, size=counts.sum(), p=pop / pop.sum())
    rows = np.repeat(np.arange(n_users), counts)
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=ML20M_SHAPE)
    x.data[:] = 1.0  # duplicates were summed
    train, val = x[: n_users - 2 * N_HELDOUT], x[n_users - N_HELDOUT :]
    held = val.copy()
    held.data = (rng.random(held.nnz) < 0.2).astype(np.float32)
    held.eliminate_zeros()
    return train, val - held, held


def ml100k():
    """The harness's ml-100k split (strong generalisation, default protocol)."""
    from harness.data import load_interactions, make_split

    split = make_split(load_interactions("ml-100k"))
    return split.train, split.val_tr, split.val_te


def fit_epochs(train, val_tr, val_te, model_name: str, n_epochs: int = 20) -> dict:
    """A fresh model as the harness trains it on ml-100k (the conf's 50 epochs decide its
    settings, e.g. no XLA Adam; 200-70, batch 100, KL annealing to 0.2), fitted for
    ``n_epochs``: median wall and CPU seconds of a whole epoch inside fit (training +
    validation NDCG@100 and loss; the first epoch, with its tracing, excluded), the first
    epoch's seconds, and the best validation NDCG."""
    from harness.models import build_model

    model = build_model(model_name, train.shape[0], train.shape[1], intermediate_dim=200,
                        latent_dim=70, batch_size=100, verbose=0, seed=1, n_epochs=50,
                        annealing=True, anneal_cap=0.2)  # fmt: skip
    model.n_epochs = n_epochs
    wall, cpu = [time.perf_counter()], [time.process_time()]

    def stamp(epoch: int, logs: dict) -> None:
        wall.append(time.perf_counter())
        cpu.append(time.process_time())

    model.fit(train, None, val_tr, val_te, epoch_callback=stamp)
    return {
        "fit_epoch_seconds": float(np.median(np.diff(wall)[1:])),
        "fit_epoch_cpu_seconds": float(np.median(np.diff(cpu)[1:])),
        "fit_first_epoch_seconds": wall[1] - wall[0],
        "fit_epochs": n_epochs,
        "fit_best_ndcg": model.best_ndcg,
    }


def matmul_gflops(tf) -> float:
    a = tf.random.normal((2048, 2048))
    b = tf.random.normal((2048, 2048))
    mm = tf.function(lambda a, b: tf.matmul(a, b))
    mm(a, b).numpy()
    n, start = 10, time.perf_counter()
    for _ in range(n):
        c = mm(a, b)
    c.numpy()
    return n * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def run_one(dataset: str, model_name: str, n_timed: int) -> dict:
    import tensorflow as tf

    from harness.models import build_model
    from harness.models.batching import SparseBatches, ndcg_from_top

    train, val_tr, val_te = synthetic_ml20m() if dataset != "ml-100k" else ml100k()
    inter, latent, batch = (600, 200, 500) if dataset != "ml-100k" else (200, 70, 100)
    model = build_model(model_name, train.shape[0], train.shape[1], intermediate_dim=inter,
                        latent_dim=latent, batch_size=batch, verbose=0, seed=1)  # fmt: skip
    net, batches = model.network, SparseBatches(train, batch, seed=1)
    epoch_iter = batches.epoch()
    timed = min(n_timed, len(batches) - 2)
    for _ in range(2):  # warm-up: tracing and first-touch allocations
        float(net.train_components(*next(epoch_iter)))
    start = time.perf_counter()
    for _ in range(timed):
        float(net.train_components(*next(epoch_iter)))
    per_batch = (time.perf_counter() - start) / timed
    n_items = train.shape[1]
    flops = 3 * 2 * batch * (2 * n_items * inter + 3 * inter * latent)  # dense-equivalent
    # what is really computed: the first layer is a sparse matmul over the batch's clicks
    clicks = train.nnz / train.shape[0] * batch
    actual = 3 * 2 * (clicks * inter + batch * (n_items * inter + 3 * inter * latent))
    valid = val_tr + val_te
    net.rank(val_tr[:100], 100)  # trace the ranking and loss functions before timing
    net.loss_sum(valid[:100])
    start = time.perf_counter()
    _, top = net.rank(val_tr, 100)
    ndcg = float(np.nanmean(ndcg_from_top(top, val_te)))
    rank_seconds = time.perf_counter() - start
    start = time.perf_counter()
    net.loss_sum(valid)
    loss_seconds = time.perf_counter() - start
    fit = {"fit_epoch_seconds": None}
    if dataset == "ml-100k":  # small enough to time real epochs of fit
        fit = fit_epochs(train, val_tr, val_te, model_name)
    return {
        **fit,
        "dataset": dataset, "model": model_name, "shape": list(train.shape),
        "train_clicks": int(train.nnz), "val_users": int(val_tr.shape[0]),
        "batches_per_epoch": len(batches), "timed_batches": timed,
        "extrapolated": timed + 2 < len(batches),
        "epoch_seconds": per_batch * len(batches),
        "train_gflops": flops / per_batch / 1e9, "actual_gflops": actual / per_batch / 1e9,
        "matmul_gflops": matmul_gflops(tf),
        "val_ndcg_seconds": rank_seconds, "val_loss_seconds": loss_seconds,
        "ndcg_untrained": ndcg,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }  # fmt: skip


def report(r: dict) -> None:
    scale = 10_000 / r["val_users"]
    note = (f"extrapolated from {r['timed_batches']} of {r['batches_per_epoch']} batches"
            if r["extrapolated"] else f"all {r['batches_per_epoch']} batches timed")  # fmt: skip
    print(
        f"{r['dataset']:>18} {r['model']:>12}  {r['shape'][0]}x{r['shape'][1]}, "
        f"{r['train_clicks']:,} train clicks\n"
        f"    epoch {r['epoch_seconds']:8.2f} s  ({note})\n"
        f"    training {r['train_gflops']:7.1f} GFLOP/s dense-equivalent vs matmul "
        f"{r['matmul_gflops']:.1f} GFLOP/s ({100 * r['train_gflops'] / r['matmul_gflops']:.0f}%); "
        f"really computed (sparse first layer) {r['actual_gflops']:.1f} GFLOP/s\n"
        f"    validation of {r['val_users']} users: NDCG {r['val_ndcg_seconds']:.2f} s + val loss "
        f"{r['val_loss_seconds']:.2f} s (per 10k users: "
        f"{scale * (r['val_ndcg_seconds'] + r['val_loss_seconds']):.2f} s)\n"
        f"    peak RSS {r['peak_rss_gib']:.2f} GiB"
    )
    if r["fit_epoch_seconds"] is not None:
        print(f"    fit() as the harness runs it (50-epoch settings): "
              f"{r['fit_epoch_seconds']:.3f} s per epoch incl. validation "
              f"({r['fit_epoch_cpu_seconds']:.3f} CPU s; median of epochs 2-{r['fit_epochs']}; "
              f"first epoch with tracing {r['fit_first_epoch_seconds']:.2f} s); best NDCG@100 "
              f"after {r['fit_epochs']} epochs {r['fit_best_ndcg']:.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches (ML-20M shape)")
    parser.add_argument("--only", choices=["ml-100k", "ml-20m-synthetic"], default=None)
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.batches)))
        return
    for dataset in [args.only] if args.only else ["ml-100k", "ml-20m-synthetic"]:
        for model in MODELS:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                dataset,
                model,
                "--batches",
                str(args.batches),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
                print(f"{dataset:>18} {model:>12}  skipped: {tail[0]}")
                continue
            report(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
