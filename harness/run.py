"""Hydra entry points of `harness-benchmark`, `harness-report` and `harness-run`.

Each turns the composed config into plain arguments and calls one stage; `harness-run` calls
the sweep (``harness.sweep.run_many``), the benchmark and the report in a row and records the
wall time of each in the report's manifest.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import matplotlib
from omegaconf import DictConfig, OmegaConf

# light imports only: TensorFlow loads when a model is first built, not for --help or a report
from harness.benchmark import BenchmarkSettings, run_benchmark
from harness.benchmark.layout import load_results, load_studies
from harness.configs import hydra_config_path

# The checkout's conf/ (absolute: Hydra resolves a relative config_path against the package),
# or in an installed wheel pkg://harness.conf (harness/configs.py).
CONFIG_PATH = hydra_config_path()


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config resolved into plain Python containers."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _paths(cfg: dict[str, Any]) -> tuple[Path, Path]:
    from harness.sweep.config import results_dir_of

    return results_dir_of(cfg), Path(cfg.get("reports_dir") or "reports").expanduser().resolve()


def study_names(cfg: dict[str, Any], fingerprint: str) -> dict[str, str]:
    """Model -> study name, exactly as `harness-sweep`/`run_many` name them."""
    from harness.sweep import study_name_for

    explicit = cfg["sweep"].get("study_name")
    return {
        m: f"{explicit}-{m}" if explicit else study_name_for(cfg["dataset"]["name"], fingerprint, m)
        for m in cfg["models"]
    }


def storage_url(cfg: dict[str, Any]) -> str:
    """The sweeps' storage URL (`sweep.storage`, else the SQLite file under results_dir)."""
    from harness.sweep import default_storage

    return cfg["sweep"].get("storage") or default_storage(_paths(cfg)[0])


def _sweep_hint(cfg: dict[str, Any]) -> str:
    return f"harness-sweep model={{model}} dataset={cfg['dataset']['name']} (or harness-run)"


def benchmark_settings(cfg: dict[str, Any]) -> BenchmarkSettings:
    """`BenchmarkSettings` from `cfg.benchmark` and `cfg.models`.

    Raises:
        StatsConfigError: an unknown `benchmark.*` key, or an invalid/contradictory option.
    """
    import dataclasses

    from harness.benchmark.stats import StatsConfigError

    b = dict(cfg["benchmark"])
    known = {f.name for f in dataclasses.fields(BenchmarkSettings)} - {"models"}
    unknown = sorted(set(b) - known)
    if unknown:
        raise StatsConfigError(
            f"unknown benchmark option(s) {', '.join('benchmark.' + k for k in unknown)}; "
            f"valid keys are {', '.join(sorted(known))}"
        )
    for key in ("fixed_models", "ks", "protocol_seeds"):  # protocol_seeds: refused
        if b.get(key) is not None:
            b[key] = tuple(b[key])
    return BenchmarkSettings(models=tuple(cfg["models"]), **b)


def fold_count(cfg: dict[str, Any]) -> int | None:
    """K when the run cross-validates over every fold (`protocol.folds` set, `protocol.fold`
    not); None for one split (no folds, or one fold chosen with `protocol.fold`)."""
    protocol = cfg.get("protocol") or {}
    if protocol.get("folds") and protocol.get("fold") is None:
        return int(protocol["folds"])
    return None


def fold_config(cfg: dict[str, Any], fold: int) -> dict[str, Any]:
    """The config of one fold: its split (`protocol.fold`), its own studies (named by the
    fold's split fingerprint, or `<sweep.study_name>-fold<k>`) and its own benchmark folder
    (`<benchmark.name>-fold<k>`), so nothing of another fold's test users is used."""
    from harness.benchmark.folds import fold_name

    sweep = dict(cfg["sweep"])
    if sweep.get("study_name"):
        sweep["study_name"] = f"{sweep['study_name']}-fold{fold}"
    bench = {**cfg["benchmark"], "name": fold_name(cfg["benchmark"]["name"], fold)}
    return {
        **cfg,
        "protocol": {**cfg["protocol"], "fold": fold},
        "sweep": sweep,
        "benchmark": bench,
    }


def power_preflight(cfg: dict[str, Any], n_users: int, n_folds: int = 1) -> list[str]:
    """Print (and save for the report) each planned comparison's detectable difference,
    before any sweep; above the margin it is a warning naming the users needed."""
    from harness.benchmark import power
    from harness.benchmark.training import is_seeded

    settings = benchmark_settings(cfg)
    options = dict(settings.power or {})
    results_dir = _paths(cfg)[0]
    pilot = options.get("pilot", "auto")
    if pilot == "auto":
        folder: Path | None = results_dir / settings.name
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
        results_dir / f"{settings.name}.power.json", planned, settings.margin, settings.test_metric
    )
    return lines


def pool_fold_benchmarks(
    cfg: dict[str, Any], folds: int, sweep_seconds: list[float] | None = None
) -> Path:
    """Pool `results/<name>-fold<k>/` into `results/<name>/` (harness.benchmark.folds)."""
    from harness.benchmark.folds import pool_folds

    settings = benchmark_settings(cfg)
    return pool_folds(
        _paths(cfg)[0],
        settings.name,
        folds,
        stats=settings.stats,
        baseline=settings.baseline,
        test_metric=settings.test_metric,
        sweep_seconds=sweep_seconds,
    )


def run_benchmark_stage(cfg: dict[str, Any], split: Any = None, executor: Any = None) -> Path:
    """Benchmark every model of `cfg.models` on the split the sweeps used (with
    `protocol.folds`: every fold on its own split, then the folds pooled), its trainings on
    `executor` (made with that split; None = the one `cfg.executor` names, for this stage;
    in this process with one local worker)."""
    folds = fold_count(cfg)
    if folds is not None and split is None:
        for fold in range(folds):
            run_benchmark_stage(fold_config(cfg, fold))
        return pool_fold_benchmarks(cfg, folds)
    from harness.benchmark.locking import remove_stale_staging, results_lock
    from harness.tracking import TrackingSettings, check_tracking

    settings = benchmark_settings(cfg)  # before any data is loaded: bad options fail first
    tracking = check_tracking(TrackingSettings.from_mapping(cfg.get("tracking")))
    with results_lock(_paths(cfg)[0]):  # one benchmark at a time per results folder
        remove_stale_staging(_paths(cfg)[0])  # before the study file: a full disk is freed
        return _benchmark_locked(cfg, settings, tracking, split, executor)


def _benchmark_locked(
    cfg: dict[str, Any], settings: Any, tracking: Any, split: Any, executor: Any
) -> Path:
    from harness.devices import parse_gpus, setup_worker
    from harness.sweep import model_config
    from harness.sweep.config import load_split
    from harness.tracking import log_benchmark

    split = split if split is not None else load_split(cfg)
    storage = storage_url(cfg)
    studies = load_studies(
        storage,
        study_names(cfg, split.fingerprint),
        fixed=settings.fixed_models,
        sweep_hint=_sweep_hint(cfg),
    )
    params = {m: model_config(cfg, m)[0] for m in cfg["models"]}
    with contextlib.ExitStack() as stack:
        if executor is None:  # the benchmark's retraining on the configured executor
            executor = stack.enter_context(benchmark_executor(cfg, split))
        setup_worker(None, parse_gpus(cfg["sweep"].get("gpus")))  # quiet TensorFlow, GPU choice
        bench = _run_benchmark(cfg, split, studies, params, settings, storage, executor)
    log_benchmark(tracking, bench)
    return bench


def _run_benchmark(cfg, split, studies, params, settings, storage, executor) -> Path:
    return run_benchmark(
        split=split,
        dataset_name=cfg["dataset"]["name"],
        studies=studies,
        model_params=params,
        settings=settings,
        results_dir=_paths(cfg)[0],
        storage=storage,
        fold=cfg["protocol"].get("fold"),
        executor=executor,
    )


@contextlib.contextmanager
def benchmark_executor(cfg: dict[str, Any], split: Any) -> Iterator[Any]:
    """The executor `cfg.executor` names for a standalone benchmark; None (fits in this
    process) for a local pool of one worker."""
    from harness.execution import ExecutorSettings, make_executor

    settings = ExecutorSettings.from_config(cfg)
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
    cfg: dict[str, Any],
    *,
    fingerprint: str | None = None,
    stage_seconds: dict[str, float] | None = None,
) -> Path:
    """Write reports/<report.name>/ from the studies and (if required/present) the benchmark."""
    from harness.report import build_report, collect_manifest

    results_dir, reports_dir = _paths(cfg)
    bench_dir = results_dir / cfg["benchmark"]["name"]
    hint = f"harness-benchmark dataset={cfg['dataset']['name']}"
    results = None
    import contextlib

    from harness.outputs import recover

    with contextlib.suppress(OSError):  # a kill between two renames: put the folder back first
        recover(results_dir, cfg["benchmark"]["name"])
    if cfg["report"]["require_benchmark"] or (bench_dir / "benchmark.json").exists():
        results = load_results(bench_dir, hint=hint)
    else:
        print(
            f"no benchmark in {bench_dir} yet: reporting the sweeps only ({hint} adds the "
            "test results)",
            file=sys.stderr,
        )
    study_cfg = cfg
    if results is not None and results.info.get("fold_fingerprints"):
        # pooled folds: the sweep figures show fold 0's studies (each fold has its own)
        study_cfg = fold_config(cfg, 0)
        fingerprint = results.info["fold_fingerprints"][0]
    if fingerprint is None:
        fingerprint = results.info["split_fingerprint"] if results else _split(cfg).fingerprint
    fixed = tuple(cfg["benchmark"]["fixed_models"])
    studies = load_studies(
        storage_url(cfg),
        study_names(study_cfg, fingerprint),
        fixed=fixed,
        sweep_hint=_sweep_hint(cfg),
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
    from harness.report.manifest import keep_provenance
    from harness.sweep import model_config

    configs = {}
    for m in cfg["models"]:
        try:
            configs[m] = model_config(cfg, m)[0]
        except Exception:  # a model without a config file of ours: shown in `config` only
            continue
    manifest = collect_manifest(
        config=cfg, split_fingerprint=fingerprint, stage_seconds=stages, model_configs=configs
    )
    if not stage_seconds:  # a standalone report: keep the run's provenance, add this line
        manifest = keep_provenance(
            _previous_manifest(reports_dir / cfg["report"]["name"]), manifest
        )
    k = next((int(s.user_attrs.get("k", 100)) for s in studies.values()), 100)
    return build_report(
        name=cfg["report"]["name"],
        studies=studies,
        results=results,
        manifest=manifest,
        reports_dir=reports_dir,
        k=k,
        published=cfg["report"].get("published"),
    )


def _previous_manifest(folder: Path) -> dict[str, Any] | None:
    import json

    try:
        found = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _split(cfg: dict[str, Any]) -> Any:
    from harness.sweep.config import load_split

    return load_split(cfg)


def run_all(cfg: dict[str, Any], overridden: Any = None) -> Path:
    """Sweep each tuned model with the same budget, benchmark, report; print where it is.

    `overridden`: model -> keys of its config set on the command line (refused when its
    search space samples them; harness.sweep.config.preflight)."""
    from harness.sweep import run_many
    from harness.sweep.config import preflight

    seconds: dict[str, float] = {}
    tuned = [m for m in cfg["models"] if m not in cfg["benchmark"]["fixed_models"]]
    # every search space, protocol and option, no data yet
    preflight(cfg, list(cfg["models"]), test_users=True, overridden=overridden)
    benchmark_settings(cfg)
    folds = fold_count(cfg)
    if folds is not None:
        return _run_folds(cfg, tuned, folds)
    from harness.execution import ExecutorSettings, make_executor

    executor_settings = ExecutorSettings.from_config(cfg)  # bad executor keys: before the data
    start = time.perf_counter()
    split = _split(cfg)
    seconds["data"] = time.perf_counter() - start
    power_preflight(cfg, int(split.test_te.shape[0]))
    start = time.perf_counter()
    # one executor (worker pool, or Slurm jobs) for the sweeps and the benchmark's retraining
    with make_executor(executor_settings, split) as executor:
        run_many(cfg, tuned, split=split, executor=executor)
        seconds["sweep"] = time.perf_counter() - start
        start = time.perf_counter()
        bench = run_benchmark_stage(cfg, split, executor)
        seconds["benchmark"] = time.perf_counter() - start
    report = run_report_stage(cfg, fingerprint=split.fingerprint, stage_seconds=seconds)
    print_summary(bench, report)
    return report


def _run_folds(cfg: dict[str, Any], tuned: list[str], folds: int) -> Path:
    """`harness-run` with `protocol.folds=K`: per fold, sweep and benchmark on that fold's
    split; then pool the folds and report. Each fold's sweep starts from its own (empty or
    resumed) studies only, never from another fold's trials."""
    from harness.execution import ExecutorSettings, make_executor
    from harness.sweep import run_many

    seconds: dict[str, float] = {}
    sweep_seconds: list[float] = []
    executor_settings = ExecutorSettings.from_config(cfg)
    start = time.perf_counter()
    splits = [_split(fold_config(cfg, fold)) for fold in range(folds)]
    seconds["data"] = time.perf_counter() - start
    power_preflight(cfg, sum(int(s.test_te.shape[0]) for s in splits), folds)
    for fold, split in enumerate(splits):
        fold_cfg = fold_config(cfg, fold)
        start = time.perf_counter()
        print(
            f"fold {fold + 1}/{folds}: {split.test_te.shape[0]} test users, "
            f"{split.val_te.shape[0]} validation users, {split.n_train_users} training users",
            file=sys.stderr,
        )
        with make_executor(executor_settings, split) as executor:  # its jobs see the fold's split
            run_many(fold_cfg, tuned, split=split, executor=executor)
            sweep_seconds.append(time.perf_counter() - start)
            seconds[f"fold {fold} sweep"] = sweep_seconds[-1]
            start = time.perf_counter()
            run_benchmark_stage(fold_cfg, split, executor)
            seconds[f"fold {fold} benchmark"] = time.perf_counter() - start
    bench = pool_fold_benchmarks(cfg, folds, sweep_seconds)
    report = run_report_stage(cfg, stage_seconds=seconds)
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


def _guarded(name: str, stage: Callable[[dict[str, Any]], Any], cfg: DictConfig) -> None:
    """Run a stage; user mistakes and interrupts end in one line and an exit status (2, 130,
    143); tracebacks only for bugs (see harness.errors)."""
    from harness.errors import guarded
    from harness.outputs import scrub_hydra_output

    scrub_hydra_output()  # Hydra saved .hydra/*.yaml already: mask a storage password there
    matplotlib.use("Agg")  # figures are files: never open a window, work without a display

    def work() -> None:
        from harness.benchmark.locking import remove_stale_staging

        config = plain_config(cfg)
        check_output_names(config)
        remove_stale_staging(_paths(config)[0])  # left by a crashed benchmark (a full disk)
        stage(config)

    guarded(name, work, resume_hint="rerun the same command to resume (finished trials are kept)")


# Names under results/ the harness itself uses: a benchmark of that name would collide.
RESERVED_NAMES = frozenset({"hydra", "test_ledger", "test_ledger.jsonl", "optuna.db"})


def check_output_names(cfg: dict[str, Any]) -> None:
    """Refuse unsafe benchmark/report/study names, reserved names and output folders that
    are files, before any work (see harness.outputs)."""
    from harness.errors import UserError
    from harness.outputs import check_name, check_study_name

    bench = check_name(cfg["benchmark"]["name"], "benchmark.name")
    report = check_name(cfg["report"]["name"], "report.name")
    if cfg["sweep"].get("study_name"):
        check_study_name(str(cfg["sweep"]["study_name"]))
    if bench.lower() in RESERVED_NAMES or bench.endswith((".torn", ".lock")):
        raise UserError(
            f"benchmark.name={bench!r} is reserved: results/{bench} is where the harness keeps "
            f"its own files ({', '.join(sorted(RESERVED_NAMES))}). Choose another name, e.g. "
            f"benchmark.name={cfg['dataset']['name']}-bench."
        )
    results_dir, reports_dir = _paths(cfg)
    for key, folder in (
        ("results_dir", results_dir),
        ("reports_dir", reports_dir),
        ("benchmark.name", results_dir / bench),
        ("report.name", reports_dir / report),
    ):
        if folder.exists() and not folder.is_dir():
            raise UserError(
                f"{key}: {folder} is a file, but the harness writes a folder there. Move the "
                f"file away or choose another {key}."
            )


def _benchmark_task(cfg: DictConfig) -> None:
    def stage(c: dict[str, Any]) -> None:
        print(f"benchmark files: {run_benchmark_stage(c)}")

    _guarded("harness-benchmark", stage, cfg)


def _report_task(cfg: DictConfig) -> None:
    def stage(c: dict[str, Any]) -> None:
        print(f"report: {run_report_stage(c) / 'report.html'}")

    _guarded("harness-report", stage, cfg)


def _run_task(cfg: DictConfig) -> None:
    from harness.sweep.app import task_overrides
    from harness.sweep.config import command_line_model_keys

    overridden = command_line_model_keys(task_overrides())
    _guarded("harness-run", lambda c: run_all(c, overridden=overridden), cfg)


def _hydra_app(task: Callable[[DictConfig], None], config_name: str, config_path: str | None):
    # config_path: the checkout's conf/, pkg://harness.conf in a wheel, or the user's first
    # config folder, searched before the shipped one (harness.configs.user_dirs_first)
    return hydra.main(
        version_base=None, config_path=config_path or CONFIG_PATH, config_name=config_name
    )(task)


def benchmark_main(config_path: str | None = None) -> None:
    """`harness-benchmark`: results/<benchmark.name>/ from the studies."""
    _hydra_app(_benchmark_task, "benchmark", config_path)()


def report_main(config_path: str | None = None) -> None:
    """`harness-report`: reports/<report.name>/ from the studies and benchmark files."""
    _hydra_app(_report_task, "report", config_path)()


def run_main(config_path: str | None = None) -> None:
    """`harness-run`: sweep, benchmark and report in one command."""
    _hydra_app(_run_task, "run", config_path)()
