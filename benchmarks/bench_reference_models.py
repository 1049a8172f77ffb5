"""Speed, memory and accuracy of the reference baselines; prints figures, asserts nothing.

Parts (each model in its own subprocess, so peaks and thread pools don't mix):

- ``epochs``: seconds per epoch of ``fit`` on ml-100k (the harness's split and
  ``conf/model/<name>.yaml``, training + validation NDCG@100 and loss; median of epochs
  2-N, the first one with its tracing reported apart) for Mult-VAE, Mult-DAE and RecVAE,
  and each one's ratio to Mult-VAE.
- ``fit``: seconds of ``fit`` on ml-100k for iALS and RP3beta (and EASE, popularity),
  best of 3, with validation and test NDCG@100.
- ``rss``: peak resident memory of one short fit (1 epoch / 1 iALS iteration / RP3beta's
  similarity; RecVAE's epoch, four passes, on the first 20,000 training users) on the ML-20M-shaped synthetic data (``dataset=synthetic-ml20m``: 136,677 x
  20,108, 10M positives, 10,000 validation users; generated once and cached), with the
  seconds it took.
- ``sweep``: a short TPE sweep per model on ml-100k (``--trials``), then the best
  configuration retrained with ``--seeds`` seeds and scored on the test users: test
  NDCG@100, mean and the range over seeds, beside popularity.

Usage: python benchmarks/bench_reference_models.py [--part epochs fit rss sweep]
    [--models mult_dae recvae ...] [--epochs 10] [--trials 10] [--seeds 3] [--max-epochs 60]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCH_MODELS = ("mult_vae", "mult_dae", "recvae")
FIT_MODELS = ("ials", "rp3beta", "ease", "popularity")
RSS_MODELS = ("mult_vae", "mult_dae", "recvae", "ials", "rp3beta")
SWEEP_MODELS = ("mult_dae", "recvae", "ials", "rp3beta")
RSS_TRAIN_USERS = {"recvae": 20_000}


def config(*overrides: str) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness.configs import conf_dir

    with initialize_config_dir(str(conf_dir()), version_base=None):
        return OmegaConf.to_container(compose("run", overrides=list(overrides)), resolve=True)


def split_for(dataset: str):
    from harness.sweep.config import load_split

    return load_split(config(f"dataset={dataset}"))


def test_ndcg(model, split) -> float:
    from harness.evaluation import ndcg_at_k

    return float(np.nanmean(ndcg_at_k(model.score(split.test_tr), split.test_te,
                                      split.test_tr, 100)))  # fmt: skip


def one_epochs(name: str, n_epochs: int) -> dict:
    from harness.models import build_model, model_defaults

    split = split_for("ml-100k")
    params = {**model_defaults(name), "n_epochs": n_epochs, "seed": 1, "patience": None}
    model = build_model(name, split.n_train_users, split.n_items, **params)
    wall = [time.perf_counter()]
    model.fit(split.train, x_val_tr=split.val_tr, x_val_te=split.val_te,
              epoch_callback=lambda e, logs: wall.append(time.perf_counter()))  # fmt: skip
    steps = np.diff(wall)
    return {"model": name, "first_epoch_s": steps[0], "epoch_s": float(np.median(steps[1:])),
            "epochs": n_epochs, "best_val_ndcg": model.best_ndcg}  # fmt: skip


def one_fit(name: str) -> dict:
    from harness.models import build_model, model_defaults

    split = split_for("ml-100k")
    times = []
    for _ in range(3):
        model = build_model(name, split.n_train_users, split.n_items, **model_defaults(name))
        start = time.perf_counter()
        model.fit(split.train, x_val_tr=split.val_tr, x_val_te=split.val_te)
        times.append(time.perf_counter() - start)
    return {"model": name, "fit_s": min(times), "val_ndcg": model.best_ndcg,
            "test_ndcg": test_ndcg(model, split)}  # fmt: skip


def one_rss(name: str) -> dict:
    from harness.models import build_model, model_defaults

    split = split_for("synthetic-ml20m")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    params = model_defaults(name)
    params |= {k: 1 for k in ("n_epochs", "iterations") if k in params}
    params |= {"seed": 1} if "seed" in params else {}
    # RecVAE's epoch is 4 passes over the users: its run trains on a slice of them (the
    # whole split stays loaded, the network has the full item axis, validation is whole)
    train = split.train[: RSS_TRAIN_USERS.get(name, split.n_train_users)]
    start = time.perf_counter()
    model = build_model(name, train.shape[0], split.n_items, **params)
    model.fit(train, x_val_tr=split.val_tr, x_val_te=split.val_te)
    return {"model": name, "fit_s": time.perf_counter() - start, "rss_split_gib": before,
            "train_users": train.shape[0],
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "shape": [split.n_train_users, split.n_items], "clicks": int(split.train.nnz),
            "val_ndcg": model.best_ndcg}  # fmt: skip


def one_sweep(name: str, n_trials: int, n_seeds: int, max_epochs: int | None) -> dict:
    from harness.benchmark.training import fit_seed
    from harness.models import model_defaults
    from harness.sweep import SweepSettings, run_sweep
    from harness.sweep.config import model_config

    cfg = config(f"models=[{name}]")
    split = split_for("ml-100k")
    model_params, space = model_config(cfg, name)
    if max_epochs and "n_epochs" in model_params:
        model_params["n_epochs"] = max_epochs
    settings = SweepSettings(n_trials=n_trials, quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        study = run_sweep(split=split, dataset_name="ml-100k", model_name=name,
                          model_params=model_params, search_space=space, settings=settings,
                          results_dir=tmp)  # fmt: skip
        best = {**model_defaults(name), **study.best_trial.user_attrs["params_full"]}
    tests = []
    for seed in range(n_seeds):
        fit = fit_seed(split, name, best, seed)
        tests.append(test_ndcg(fit.model, split))
    return {"model": name, "trials": n_trials, "best_val_ndcg": study.best_value,
            "test_ndcg_mean": float(np.mean(tests)), "test_ndcg_min": min(tests),
            "test_ndcg_max": max(tests), "seeds": n_seeds,
            "best_params": {k: v for k, v in best.items() if k in study.best_trial.params}}  # fmt: skip


def run(*args: str) -> dict | None:
    done = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:] or ["(no output)"]
        print(f"  {args[1]}: failed: {' | '.join(tail)}", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["epochs", "fit", "rss"],
                        choices=["epochs", "fit", "rss", "sweep"])  # fmt: skip
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="sweep: cap n_epochs of iterative models (early stopping still on)",
    )
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        part, name = args.one[:2]
        out = {"epochs": lambda: one_epochs(name, args.epochs), "fit": lambda: one_fit(name),
               "rss": lambda: one_rss(name),
               "sweep": lambda: one_sweep(name, args.trials, args.seeds, args.max_epochs)}[part]()  # fmt: skip
        print(json.dumps(out, default=float))
        return
    if "epochs" in args.part:
        print(f"ml-100k, seconds per epoch of fit (median of epochs 2-{args.epochs}):")
        base = None
        for name in args.models or EPOCH_MODELS:
            r = run("epochs", name, "--epochs", str(args.epochs))
            if r is None:
                continue
            base = r["epoch_s"] if name == "mult_vae" else base
            ratio = f", {r['epoch_s'] / base:.2f}x Mult-VAE" if base else ""
            print(f"  {name:>10}: {r['epoch_s']:.3f} s/epoch{ratio} (first epoch "
                  f"{r['first_epoch_s']:.1f} s; best val NDCG@100 {r['best_val_ndcg']:.4f})",
                  flush=True)  # fmt: skip
    if "fit" in args.part:
        print("ml-100k, fit seconds (best of 3), conf/model defaults:")
        for name in args.models or FIT_MODELS:
            if (r := run("fit", name)) is not None:
                print(f"  {name:>10}: {r['fit_s']:.2f} s; val NDCG@100 {r['val_ndcg']:.4f}, "
                      f"test {r['test_ndcg']:.4f}", flush=True)  # fmt: skip
    if "rss" in args.part:
        print("ML-20M-shaped synthetic data, one short fit each (1 epoch / 1 iteration):")
        run("rss", "popularity")  # generates and caches the split once
        for name in args.models or RSS_MODELS:
            if (r := run("rss", name)) is not None:
                print(f"  {name:>10}: peak RSS {r['peak_rss_gib']:.2f} GiB (split loaded: "
                      f"{r['rss_split_gib']:.2f} GiB), {r['fit_s']:.0f} s, "
                      f"{r['shape'][0]}x{r['shape'][1]}, {r['clicks']:,} clicks, trained on "
                      f"{r['train_users']} users", flush=True)  # fmt: skip
    if "sweep" in args.part:
        print(
            f"ml-100k, {args.trials}-trial TPE sweep (the default budget's early stopping; "
            f"max epochs {args.max_epochs or 'as configured'}), best retrained with "
            f"{args.seeds} seeds:"
        )
        for name in args.models or ("popularity", *SWEEP_MODELS):
            cap = ["--max-epochs", str(args.max_epochs)] if args.max_epochs else []
            r = run("sweep", name, "--trials", str(args.trials), "--seeds", str(args.seeds), *cap)
            if r is not None:
                print(f"  {name:>10}: test NDCG@100 {r['test_ndcg_mean']:.4f} "
                      f"[{r['test_ndcg_min']:.4f}, {r['test_ndcg_max']:.4f}] over {r['seeds']} "
                      f"seeds; best val {r['best_val_ndcg']:.4f}; {r['best_params']}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
