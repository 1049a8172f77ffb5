"""Time and peak memory of generating the synthetic ML-20M shape.

Run: ``python benchmarks/bench_synthetic.py [--users N --items N --positives N --seed S]``.
Prints wall time, peak RSS of the process (``resource.getrusage``) and the peak of
numpy/Python allocations during generation (``tracemalloc``, which numpy reports to).
It asserts nothing about timing: the figures are for the reader.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc

from harness.data.synthetic import generate_synthetic


def main(argv: list[str] | None = None) -> None:
    """Generate one dataset of the requested shape and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=136_677)
    parser.add_argument("--items", type=int, default=20_108)
    parser.add_argument("--positives", type=int, default=10_000_000)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tracemalloc", action="store_true", help="time without tracing")
    args = parser.parse_args(argv)

    trace = not args.no_tracemalloc
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    frame = generate_synthetic(
        n_users=args.users,
        n_items=args.items,
        n_positives=args.positives,
        rank=args.rank,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    seconds = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else float("nan")
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    positives = int((frame["rating"] > 3.5).sum())
    print(f"shape: {args.users:,} users x {args.items:,} items, rank {args.rank}, seed {args.seed}")
    print(f"rows: {len(frame):,} ({positives:,} positives > 3.5, {len(frame) - positives:,} low)")
    print(
        f"users with rows: {frame['user'].nunique():,}; items with rows: {frame['item'].nunique():,}"
    )
    print(f"frame memory: {frame.memory_usage(deep=True).sum() / 2**20:,.0f} MiB")
    print(f"wall time: {seconds:.1f} s" + (" (tracemalloc on: slower)" if trace else ""))
    if trace:
        print(f"peak traced allocations: {traced_peak / 2**20:,.0f} MiB")
    print(f"peak RSS of the process: {rss_kib / 2**10:,.0f} MiB")


if __name__ == "__main__":
    main()
