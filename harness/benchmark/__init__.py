"""The benchmark stage: best configurations retrained over seeds and scored on test users.

Modules:
    core      the recipe (candidates, seed-aware selection, test scoring, optimal beta)
    training  one seeded fit early-stopped on validation users; the test scorer
    summary   the per-model tables (metrics, tests, seeds, budget)
    stats     intervals, paired tests, multiple-comparison correction
    layout    the files under ``results/<name>/``: writing and loading

TensorFlow is imported only when a model is built (``harness.models``), never by importing
this package.
"""

from harness.benchmark.core import BenchmarkSettings, benchmark_model, candidates, run_benchmark
from harness.benchmark.layout import BenchmarkResults, MissingInputError, load_results

__all__ = [
    "BenchmarkResults",
    "BenchmarkSettings",
    "MissingInputError",
    "benchmark_model",
    "candidates",
    "load_results",
    "run_benchmark",
]
