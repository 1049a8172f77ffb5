"""Time and peak memory of make_split and of the metrics at ML-20M scale.

Run: ``python benchmarks/bench_protocol_metrics.py [--quick]``. Prints figures, asserts
nothing. Aims: split < 60 s and < 4 GiB on 136,677 users x 20,108 items (~10M positives, as
ML-20M after rating > 3.5); NDCG@100 for 10,000 users < 1 s.

Data: ``harness.data.synthetic.generate_synthetic`` when available, else uniform random
pairs of the same shape (generation time is not part of the figures). The split holds out
10,000 validation and 10,000 test users, as Liang et al. do for ML-20M; the validation
fold-in / held-out blocks then serve as realistic inputs to the metric timings.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness.data.protocol import make_split  # noqa: E402
from harness.evaluation.metrics import evaluate_all, ndcg_at_k  # noqa: E402

GIB = 1024**3


def ml20m_shaped(n_users: int, n_items: int, n_positives: int) -> tuple[pd.DataFrame, str]:
    try:
        from harness.data.synthetic import generate_synthetic
    except ImportError:
        generate_synthetic = None
    if generate_synthetic is not None:
        df = generate_synthetic(n_users=n_users, n_items=n_items, n_positives=n_positives)
        return df, "harness.data.synthetic.generate_synthetic"
    rng = np.random.default_rng(0)
    n = int(n_positives * 1.3)  # some low ratings, as in real data
    df = pd.DataFrame(
        {
            "user": rng.integers(0, n_users, n).astype(np.int32),
            "item": (rng.zipf(1.3, n) % n_items).astype(np.int32),  # popularity skew
            "rating": rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n, p=[0.05, 0.1, 0.1, 0.4, 0.35]),
            "timestamp": rng.integers(0, 2**31, n, dtype=np.int64),
        }
    )
    return df.astype({"rating": np.float32}), "uniform random pairs (fallback)"


def measure(fn):
    """Wall seconds and peak traced bytes (numpy buffers included) of fn()."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 1/10 size run to smoke-test")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    n_users, n_items, n_pos = 136_677 // scale, 20_108, 10_000_000 // scale
    n_eval = 10_000 // scale

    t0 = time.perf_counter()
    df, source = ml20m_shaped(n_users, n_items, n_pos)
    print(f"data: {len(df):,} rows ({source}), generated in {time.perf_counter() - t0:.1f} s")

    with tempfile.TemporaryDirectory() as cache:
        kwargs = dict(n_val_users=n_eval, n_test_users=n_eval, cache_dir=cache)
        split, secs, peak = measure(lambda: make_split(df, **kwargs))
        print(
            f"make_split: {secs:.1f} s, peak traced memory {peak / GIB:.2f} GiB (aims 60 s, 4 GiB)"
        )
        _, secs_hit, _ = measure(lambda: make_split(df, **kwargs))
        print(f"make_split, cache hit: {secs_hit:.1f} s")
    print(split.summary())

    rng = np.random.default_rng(1)
    scores = rng.random(split.val_tr.shape, dtype=np.float32)
    users = f"{scores.shape[0]:,} users x {scores.shape[1]:,} items"
    for label, fn in [
        ("NDCG@100", lambda: ndcg_at_k(scores, split.val_te, split.val_tr, k=100)),
        (
            "evaluate_all ks=(10,20,50,100)",
            lambda: evaluate_all(scores, split.val_te, split.val_tr),
        ),
    ]:
        fn()  # warm-up: first-touch page faults are not the metric's cost
        runs = [measure(fn)[1:] for _ in range(3)]
        best = min(s for s, _ in runs)
        print(
            f"{label} on {users}: best of 3 {best:.3f} s, "
            f"peak traced memory {max(p for _, p in runs) / GIB:.2f} GiB (aim 1 s for NDCG)"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"process max RSS (incl. data generation and scores): {rss:.2f} GiB")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}")


if __name__ == "__main__":
    main()
