"""The benchmark stage: best configurations retrained over seeds and scored on test users.

Modules:
    core      one benchmark run: inputs checked, the recipe run, the results folder written
    settings  the ``benchmark.*`` keys (`BenchmarkSettings`)
    recipe    the recipe of a model as a job graph (selection, test runs, Liang, scoring)
    selection candidates and seed-aware selection; a study's trial budget
    liang     Liang et al.'s optimal-beta procedure: parameters and summary
    parallel  the job-graph scheduler and the jobs that run in worker processes
    serial    `SerialExecutor`: the executor interface run inline in this process
    training  one seeded fit early-stopped on validation users; the test scorer
    summary   the per-model tables (metrics, tests, seeds, budget)
    stats     intervals, paired tests, Holm's correction, planning (a package: settings,
              components, comparisons, planning)
    power     the power preflight: detectable differences before any sweep
    ledger    the test ledger: every scoring of test users, reused across runs
    folds     user-level cross-validation: one benchmark per fold, pooled
    locking   the results folder's lock and the models' staging folder
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
