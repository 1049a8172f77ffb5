"""MultVAE with Liang et al.'s ml-100k settings, plateau vs constant learning rate.

The default ml-100k split (strong generalisation, conf/protocol/strong.yaml), Liang's
settings: 200-70 network, batch 100, input dropout 0.5, no decoder dropout, beta annealed
to 0.2 reached at epoch 20 (total_anneal_steps = batches_per_epoch * 20 / 0.2), 100
epochs, best-validation weights, posterior mean. For each lr_schedule ("plateau" = the
seed's ReduceLROnPlateau on val_loss, the harness's behaviour before issue 8; "constant" =
Liang et al. and the new MultVAE default) and seed it prints the test NDCG@100 (test_tr ->
test_te), the best epoch (counted from 1) and the epoch at which the learning rate first
reached its floor. Prints figures, asserts nothing.

Usage: python benchmarks/bench_mult_vae_parity.py [--seeds 3] [--epochs 100]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--schedules", default="plateau,constant")
    args = parser.parse_args()

    from harness.data import load_interactions, make_split
    from harness.evaluation import ndcg_at_k
    from harness.models import MultVAE

    split = make_split(load_interactions("ml-100k"))
    n_users, n_items = split.train.shape
    batch = 100
    batches = -(-n_users // batch)
    steps = batches * 20 / 0.2
    print(
        f"ml-100k default split: {n_users} train users, {n_items} items, "
        f"{split.val_tr.shape[0]} validation / {split.test_tr.shape[0]} test users; "
        f"{batches} batches/epoch, total_anneal_steps {steps:g}"
    )
    summary = {}
    for schedule in args.schedules.split(","):
        tests, bests = [], []
        for seed in range(args.seeds):
            start = time.perf_counter()
            model = MultVAE(
                n_users, n_items, 200, 70, n_epochs=args.epochs, batch_size=batch, k=100,
                verbose=0, drop_encoder=0.5, drop_decoder=0.0, annealing=True, anneal_cap=0.2,
                total_anneal_steps=steps, seed=seed, lr_schedule=schedule,
            )  # fmt: skip
            model.fit(split.train, x_val_tr=split.val_tr, x_val_te=split.val_te)
            scores = model.score(split.test_tr)
            test = float(np.nanmean(ndcg_at_k(scores, split.test_te, split.test_tr, 100)))
            lrs = model.history()["lr"]
            floor = next((i + 1 for i, lr in enumerate(lrs) if lr <= 1.0001e-4), None)
            tests.append(test)
            bests.append(model.best_epoch + 1)
            print(
                f"  {schedule:8s} seed {seed}: test NDCG@100 {test:.4f}, best epoch "
                f"{model.best_epoch + 1}, val NDCG@100 {model.best_ndcg:.4f}, lr floor 1e-4 "
                f"reached at epoch {floor}, {time.perf_counter() - start:.0f} s",
                flush=True,
            )
        summary[schedule] = (tests, bests)
    print("\nschedule  test NDCG@100 mean (per seed)           best epochs")
    for schedule, (tests, bests) in summary.items():
        per_seed = ", ".join(f"{t:.4f}" for t in tests)
        print(f"{schedule:9s} {np.mean(tests):.4f} ({per_seed})   {bests}")


if __name__ == "__main__":
    main()
