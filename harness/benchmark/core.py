"""One benchmark run: each model's best configuration retrained over seeds and scored on test
users, with CIs, paired tests against the baseline, the trial budgets and the optimal beta
two ways, written to ``results/<name>/`` (layout in ``harness.benchmark.layout``) under the
folder's lock. This module checks the inputs, runs the recipe on the run's executor
(``harness.benchmark.recipe``) and gathers the records into the tables.

Recipe per model (selection in ``selection``, Liang's procedure in ``liang``):
    1. candidates: the top ``n_candidates`` complete trials of its study (a fixed config for
       a model without a study, e.g. popularity);
    2. seed-aware selection: each candidate retrained with every selection seed on the
       training users; the best mean validation NDCG wins;
    3. the winner retrained with fresh test seeds, disjoint from the selection seeds (so
       the seed luck that helped it win does not reach the test numbers), and each run
       scored on the test users once (a scoring stored in the test ledger by an earlier run
       with the same code is reused instead, see ``ledger.py``); a deterministic model is
       trained once;
    4. models with a beta only: Liang et al.'s optimal beta (anneal to cap 1.0, take the
       beta of the best validation epoch, retrain with it as the cap at the same slope,
       score on test), on the test seeds.

User-level cross-validation (``protocol.folds``) runs this recipe once per fold, on that
fold's split, and pools the folds (``harness.benchmark.folds``).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from harness.benchmark.layout import write_results
from harness.benchmark.ledger import TestLedger
from harness.benchmark.locking import results_lock, staging_folder
from harness.benchmark.parallel import on_executor
from harness.benchmark.recipe import ModelJobs, benchmark_model, planned_runs, run_recipe
from harness.benchmark.selection import candidates
from harness.benchmark.serial import SerialExecutor
from harness.benchmark.settings import BenchmarkSettings
from harness.benchmark.summary import summary_tables
from harness.benchmark.training import HeldOutTestScorer, is_seeded
from harness.execution.progress import JobProgress
from harness.outputs import output_dir
from harness.secrets import mask_text

__all__ = ["BenchmarkSettings", "benchmark_model", "candidates", "planned_runs", "run_benchmark"]
log = logging.getLogger("harness.benchmark")


def _models_staging(results_dir: Path, settings: BenchmarkSettings) -> Path | None:
    """An empty folder beside the results folder where the final models are saved until
    ``write_results`` moves it in (a stale one from a crashed run is removed first)."""
    if not settings.save_models:
        return None
    staging = staging_folder(results_dir, settings.name)
    shutil.rmtree(staging, ignore_errors=True)
    return staging / "models"


def run_benchmark(**kwargs: Any) -> Path:
    """Benchmark every model of ``settings.models`` and write ``results_dir/<name>/``.

    Holds the results folder's benchmark lock (a second benchmark there waits), and removes
    the models' staging folder when it fails (a full disk must not stay full). Arguments and
    errors: see `_run_benchmark`.
    """
    results_dir = Path(kwargs["results_dir"])
    with results_lock(results_dir):
        try:
            return _run_benchmark(**kwargs)
        except BaseException:
            shutil.rmtree(staging_folder(results_dir, kwargs["settings"].name), True)
            raise


def _run_benchmark(
    *,
    split,
    dataset_name: str,
    studies: Mapping[str, optuna.Study | None],
    model_params: Mapping[str, dict[str, Any]],
    settings: BenchmarkSettings,
    results_dir: Path,
    storage: str | None = None,
    fold: int | None = None,
    executor: Any = None,
) -> Path:
    """Benchmark every model of ``settings.models`` and write ``results_dir/<name>/``.

    Args:
        split: the data split (the studies' ``split_fingerprint`` must match it).
        dataset_name: dataset name, recorded.
        studies: model -> its study (None for a fixed-configuration model).
        model_params: model -> fixed parameters (used without a study, and as fallback).
        settings: benchmark settings.
        results_dir: parent folder of the benchmark folder.
        storage: storage URL, recorded.
        fold: with user-level cross-validation, which fold ``split`` is (recorded).
        executor: where the seeded models' trainings and scorings run, as one job graph
            (`harness.execution`, made with ``split``); None = in this process.

    Returns:
        The benchmark folder.

    Raises:
        ValueError: a study was made on another split than ``split``.
        StatsConfigError: a stochastic model ended with fewer than 2 seed runs.
    """
    start = time.perf_counter()
    output_dir(results_dir, settings.name, "benchmark.name")  # a bad name fails before training
    for model, study in studies.items():
        fp = study.user_attrs.get("split_fingerprint") if study else None
        if fp and fp != split.fingerprint:
            raise ValueError(
                f"study {study.study_name!r} ({model}) was swept on split {fp[:12]} "
                f"but the benchmark split is {split.fingerprint[:12]}: benchmark "
                "with the dataset/protocol the sweep used"
            )
    ledger = TestLedger(results_dir, rescore=settings.rescore)
    scorer = HeldOutTestScorer(split, settings.ks, ledger=ledger)
    models_dir = _models_staging(results_dir, settings)  # None when not saving models
    progress = JobProgress(
        planned_runs(studies, model_params, settings), f"benchmark {settings.name}", logger=log
    )
    workers = executor if on_executor(executor, split) else None
    where = workers.describe() if workers is not None else "this process"
    progress.start(f"{where} ({', '.join(settings.models)}; {settings.n_seeds} seed(s))")
    graph: dict[str, ModelJobs] = {}
    if workers is not None:  # the seeded models' trainings and scorings as one job graph
        seeded = [m for m in settings.models if is_seeded(m)]
        graph = run_recipe(
            workers, split, seeded, studies, model_params, settings, scorer, progress
        )
    runs = []
    for m in settings.models:  # records (and test scorings) in model order
        if m not in graph:  # the recipe of this model alone, in this process
            one = {m: model_params.get(m, {})}
            here = run_recipe(
                SerialExecutor(), split, [m], studies, one, settings, scorer, progress
            )
            graph[m] = here[m]
        runs.append(graph.pop(m).record(settings, scorer, models_dir))
    info = {
        "name": settings.name,
        "dataset": dataset_name,
        "split_fingerprint": split.fingerprint,
        "n_test_users": int(split.test_te.shape[0]),
        "n_items": int(split.n_items),
        "seeds": settings.seeds,
        "n_seeds": settings.n_seeds,
        "baseline": settings.baseline,
        "test_metric": settings.test_metric,
        "storage": mask_text(storage) if storage else storage,  # password masked
        "test_scorings": scorer.record(),
        "test_scored_once": max(scorer.scored.values(), default=0) <= 1,
        "test_ledger": scorer.ledger_record(),
        "fold": fold,
        "folds": split.params.get("folds"),
        "test_seeds": settings.test_seeds,
        "test_exposure": ledger.exposure(split.fingerprint),
        "code_fingerprint": ledger.code,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(settings).items()},
        "models": {r.model: r.info for r in runs},
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    tables = summary_tables(
        runs,
        baseline=settings.baseline,
        test_metric=settings.test_metric,
        stats=settings.stats,
    )
    per_user = {r.model: {**r.per_user, "test_users": np.asarray(split.test_users)} for r in runs}
    folders = {"models": models_dir} if models_dir is not None else None
    target = output_dir(results_dir, settings.name, "benchmark.name")
    written = write_results(target, info, tables, per_user, folders)
    if models_dir is not None:
        shutil.rmtree(models_dir.parent, ignore_errors=True)  # the emptied staging folder
    return written
