"""The stages of a run on typed settings (`harness.settings.RunSettings`): the sweeps, the
benchmark and the report, one after another (`run_all`), or per fold and then pooled
(`protocol.folds`). The entry points in `harness.run` build the settings once and call these;
nothing here reads the Hydra config.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# light imports only: TensorFlow loads when a model is first built, not for --help or a report
from harness.benchmark import run_benchmark
from harness.benchmark.layout import load_results, load_studies
from harness.settings import RunSettings


def study_names(run: RunSettings, fingerprint: str) -> dict[str, str]:
    """Model -> study name, exactly as `harness-sweep`/`run_many` name them."""
    from harness.sweep import study_name_for

    explicit = run.sweep.study_name
    return {
        m: f"{explicit}-{m}" if explicit else study_name_for(run.dataset_name, fingerprint, m)
        for m in run.model_names
    }


def storage_url(run: RunSettings) -> str:
    """The sweeps' storage URL (`sweep.storage`, else the SQLite file under results_dir)."""
    from harness.sweep import default_storage

    return run.sweep.storage or default_storage(run.results_dir)


def _sweep_hint(run: RunSettings) -> str:
    return f"harness-sweep model={{model}} dataset={run.dataset_name} (or harness-run)"


def power_preflight(run: RunSettings, n_users: int, n_folds: int = 1) -> list[str]:
    """Print (and save for the report) each planned comparison's detectable difference,
    before any sweep; above the margin it is a warning naming the users needed."""
    from harness.benchmark import power
    from harness.benchmark.training import is_seeded

    settings = run.benchmark
    options = dict(settings.power or {})
    pilot = options.get("pilot", "auto")
    if pilot == "auto":
        folder: Path | None = run.results_dir / settings.name
    else:
        folder = Path(pilot).expanduser() if pilot else None
    if folder is not None and not (folder / "per_user").is_dir():
        if pilot not in ("auto", None):
            print(
                f"power preflight: no benchmark in {folder} (benchmark.power.pilot); using "
                "the stated variances",
                file=sys.stderr,
            )
        folder = None
    planned = power.plan(
        models=list(settings.models),
        baseline=settings.baseline,
        metric=settings.test_metric,
        n_users=n_users,
        n_folds=n_folds,
        n_seeds=settings.n_seeds,
        stats=settings.stats,
        power=options,
        stochastic=is_seeded,
        pilot=folder,
    )
    lines = power.messages(planned, settings.margin, settings.test_metric)
    for line in lines:
        print(line, file=sys.stderr)
    power.save(
        run.results_dir / f"{settings.name}.power.json",
        planned,
        settings.margin,
        settings.test_metric,
    )
    return lines


def pool_fold_benchmarks(
    run: RunSettings, folds: int, sweep_seconds: list[float] | None = None
) -> Path:
    """Pool `results/<name>-fold<k>/` into `results/<name>/` (harness.benchmark.folds)."""
    from harness.benchmark.folds import pool_folds

    settings = run.benchmark
    return pool_folds(
        run.results_dir,
        settings.name,
        folds,
        stats=settings.stats,
        baseline=settings.baseline,
        test_metric=settings.test_metric,
        sweep_seconds=sweep_seconds,
    )


def load_split(run: RunSettings) -> Any:
    """The run's split (its dataset, protocol and cache folder)."""
    from harness.sweep.config import load_split as load

    return load(dataset=run.dataset, protocol=run.protocol, data_dir=run.data_dir)


def run_benchmark_stage(run: RunSettings, split: Any = None, executor: Any = None) -> Path:
    """Benchmark every model of the run on the split the sweeps used (with
    `protocol.folds`: every fold on its own split, then the folds pooled), its trainings on
    `executor` (made with that split; None = the one `run.executor` names, for this stage;
    in this process with one local worker)."""
    folds = run.fold_count
    if folds is not None and split is None:
        for fold in range(folds):
            run_benchmark_stage(run.for_fold(fold))
        return pool_fold_benchmarks(run, folds)
    from harness.benchmark.locking import remove_stale_staging, results_lock
    from harness.tracking import check_tracking

    tracking = check_tracking(run.tracking)
    with results_lock(run.results_dir):  # one benchmark at a time per results folder
        remove_stale_staging(run.results_dir)  # before the study file: a full disk is freed
        return _benchmark_locked(run, tracking, split, executor)


def _benchmark_locked(run: RunSettings, tracking: Any, split: Any, executor: Any) -> Path:
    from harness.devices import parse_gpus, setup_worker
    from harness.tracking import log_benchmark

    split = split if split is not None else load_split(run)
    storage = storage_url(run)
    studies = load_studies(
        storage,
        study_names(run, split.fingerprint),
        fixed=run.benchmark.fixed_models,
        sweep_hint=_sweep_hint(run),
    )
    params = {m.name: dict(m.params) for m in run.models}
    with contextlib.ExitStack() as stack:
        if executor is None:  # the benchmark's retraining on the configured executor
            executor = stack.enter_context(benchmark_executor(run.executor, split))
        setup_worker(None, parse_gpus(run.sweep.gpus))  # quiet TensorFlow, GPU choice
        bench = run_benchmark(
            split=split,
            dataset_name=run.dataset_name,
            studies=studies,
            model_params=params,
            settings=run.benchmark,
            results_dir=run.results_dir,
            storage=storage,
            fold=run.fold,
            executor=executor,
        )
    log_benchmark(tracking, bench)
    return bench


@contextlib.contextmanager
def benchmark_executor(settings: Any, split: Any) -> Iterator[Any]:
    """The executor `settings` (`ExecutorSettings`) names for a standalone benchmark; None
    (fits in this process) for a local pool of one worker."""
    from harness.execution import make_executor

    if settings.backend == "local" and settings.n_workers != "auto":
        if int(settings.n_workers) <= 1:
            yield None
            return
    executor = make_executor(settings, split)
    if executor.n_workers <= 1 and settings.backend == "local":
        executor.close()
        yield None
        return
    with executor:
        yield executor


def run_report_stage(
    run: RunSettings,
    *,
    fingerprint: str | None = None,
    stage_seconds: dict[str, float] | None = None,
) -> Path:
    """Write reports/<report.name>/ from the studies and (if required/present) the benchmark."""
    from harness.execution import placement_summary
    from harness.outputs import recover
    from harness.report import build_report, collect_manifest
    from harness.report.manifest import keep_provenance, rerun_facts

    bench_dir = run.results_dir / run.benchmark.name
    hint = f"harness-benchmark dataset={run.dataset_name}"
    results = None
    with contextlib.suppress(OSError):  # a kill between two renames: put the folder back first
        recover(run.results_dir, run.benchmark.name)
    if run.report.require_benchmark or (bench_dir / "benchmark.json").exists():
        results = load_results(bench_dir, hint=hint)
    else:
        print(
            f"no benchmark in {bench_dir} yet: reporting the sweeps only ({hint} adds the "
            "test results)",
            file=sys.stderr,
        )
    study_run = run
    if results is not None and results.info.get("fold_fingerprints"):
        # pooled folds: the sweep figures show fold 0's studies (each fold has its own)
        study_run = run.for_fold(0)
        fingerprint = results.info["fold_fingerprints"][0]
    if fingerprint is None:
        fingerprint = results.info["split_fingerprint"] if results else load_split(run).fingerprint
    studies = load_studies(
        storage_url(run),
        study_names(study_run, fingerprint),
        fixed=run.benchmark.fixed_models,
        sweep_hint=_sweep_hint(run),
        usable=("COMPLETE", "PRUNED"),
    )
    studies = {m: s for m, s in studies.items() if s is not None}
    stages = dict(stage_seconds or {})
    if not stage_seconds:  # a standalone report: take the earlier stages' times from records
        stages["sweep (sum of trial times)"] = sum(
            (t.duration.total_seconds() for s in studies.values() for t in s.trials if t.duration),
            0.0,
        )
        if results:
            stages["benchmark"] = results.info.get("wall_seconds", float("nan"))
    manifest = collect_manifest(
        config=dict(run.config),
        split_fingerprint=fingerprint,
        stage_seconds=stages,
        model_configs={m.name: dict(m.params) for m in run.models},
        rerun=rerun_facts(run.sweep, run.benchmark, run.protocol.get("seed")),
        jobs=placement_summary(run.executor),
    )
    if not stage_seconds:  # a standalone report: keep the run's provenance, add this line
        manifest = keep_provenance(_previous_manifest(run.reports_dir / run.report.name), manifest)
    k = next((int(s.user_attrs.get("k", 100)) for s in studies.values()), 100)
    return build_report(
        name=run.report.name,
        studies=studies,
        results=results,
        manifest=manifest,
        reports_dir=run.reports_dir,
        k=k,
        published=run.report.published,
    )


def _previous_manifest(folder: Path) -> dict[str, Any] | None:
    import json

    try:
        found = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def check_run(run: RunSettings) -> None:
    """Everything cheap before any data: the protocol (with test users), every model's config
    and search space, command-line model keys, study name, GPUs and storage."""
    from harness.sweep.config import check_models, check_protocol_of, preflight_models

    check_protocol_of(run.dataset, run.protocol, test_users=True)
    preflight_models(run.models, run.overridden)
    check_models(run.tuned, run.sweep, run.results_dir)


def sweep_stage(run: RunSettings, split: Any, executor: Any) -> None:
    """Sweep each tuned model with the same budget on `split`."""
    from harness.sweep.config import sweep_models
    from harness.tracking import check_tracking, make_callbacks

    sweep_models(
        run.tuned,
        settings=run.sweep,
        dataset_name=run.dataset_name,
        results_dir=run.results_dir,
        config=run.config,
        callbacks=make_callbacks(check_tracking(run.tracking)),
        executor_settings=run.executor,
        split=split,
        executor=executor,
    )


def run_all(run: RunSettings) -> Path:
    """Sweep each tuned model with the same budget, benchmark, report; print where it is."""
    from harness.execution import make_executor

    seconds: dict[str, float] = {}
    check_run(run)  # every search space, protocol and option, no data yet
    folds = run.fold_count
    if folds is not None:
        return _run_folds(run, folds)
    start = time.perf_counter()
    split = load_split(run)
    seconds["data"] = time.perf_counter() - start
    power_preflight(run, int(split.test_te.shape[0]))
    start = time.perf_counter()
    # one executor (worker pool, or Slurm jobs) for the sweeps and the benchmark's retraining
    with make_executor(run.executor, split) as executor:
        sweep_stage(run, split, executor)
        seconds["sweep"] = time.perf_counter() - start
        start = time.perf_counter()
        bench = run_benchmark_stage(run, split, executor)
        seconds["benchmark"] = time.perf_counter() - start
    report = run_report_stage(run, fingerprint=split.fingerprint, stage_seconds=seconds)
    print_summary(bench, report)
    return report


def _run_folds(run: RunSettings, folds: int) -> Path:
    """`harness-run` with `protocol.folds=K`: per fold, sweep and benchmark on that fold's
    split; then pool the folds and report. Each fold's sweep starts from its own (empty or
    resumed) studies only, never from another fold's trials."""
    from harness.execution import make_executor

    seconds: dict[str, float] = {}
    sweep_seconds: list[float] = []
    start = time.perf_counter()
    splits = [load_split(run.for_fold(fold)) for fold in range(folds)]
    seconds["data"] = time.perf_counter() - start
    power_preflight(run, sum(int(s.test_te.shape[0]) for s in splits), folds)
    for fold, split in enumerate(splits):
        fold_run = run.for_fold(fold)
        start = time.perf_counter()
        print(
            f"fold {fold + 1}/{folds}: {split.test_te.shape[0]} test users, "
            f"{split.val_te.shape[0]} validation users, {split.n_train_users} training users",
            file=sys.stderr,
        )
        with make_executor(run.executor, split) as executor:  # its jobs see the fold's split
            sweep_stage(fold_run, split, executor)
            sweep_seconds.append(time.perf_counter() - start)
            seconds[f"fold {fold} sweep"] = sweep_seconds[-1]
            start = time.perf_counter()
            run_benchmark_stage(fold_run, split, executor)
            seconds[f"fold {fold} benchmark"] = time.perf_counter() - start
    bench = pool_fold_benchmarks(run, folds, sweep_seconds)
    report = run_report_stage(run, stage_seconds=seconds)
    print_summary(bench, report)
    return report


def print_summary(bench: Path, report: Path) -> None:
    """Print the key table and where the benchmark files and the report are."""
    from harness.report.document import Document, Section, to_markdown
    from harness.report.tables import metrics_table

    results = load_results(bench)
    print(
        to_markdown(
            Document("Test results", [Section(results.info["name"], [metrics_table(results)])])
        )
    )
    print(f"benchmark files: {bench}")
    print(f"report: {report / 'report.html'} (and report.md)")
