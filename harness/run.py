"""Hydra entry points of `harness-benchmark`, `harness-report` and `harness-run`.

Each validates the composed config once into typed settings (`harness.settings.RunSettings`)
and calls one stage of `harness.stages` with them; `harness-run` calls the sweep, the benchmark
and the report in a row (`harness.stages.run_all`) and records the wall time of each in the
report's manifest. Below this module no stage reads the config.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import hydra
import matplotlib
from omegaconf import DictConfig, OmegaConf

from harness.configs import hydra_config_path
from harness.settings import RunSettings
from harness.stages import run_all, run_benchmark_stage, run_report_stage

# The checkout's conf/ (absolute: Hydra resolves a relative config_path against the package),
# or in an installed wheel pkg://harness.conf (harness/configs.py).
CONFIG_PATH = hydra_config_path()


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config resolved into plain Python containers."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _guarded(
    name: str,
    stage: Callable[[RunSettings], Any],
    cfg: DictConfig,
    overridden: Mapping[str | None, Collection[str]] | None = None,
) -> None:
    """Build the run's settings once and run a stage on them; user mistakes and interrupts
    end in one line and an exit status (2, 130, 143); tracebacks only for bugs (see
    harness.errors)."""
    from harness.errors import guarded
    from harness.outputs import scrub_hydra_output

    scrub_hydra_output()  # Hydra saved .hydra/*.yaml already: mask a storage password there
    matplotlib.use("Agg")  # figures are files: never open a window, work without a display

    def work() -> None:
        from harness.benchmark.locking import remove_stale_staging

        run = RunSettings.from_config(plain_config(cfg), overridden)
        check_output_names(run)
        remove_stale_staging(run.results_dir)  # left by a crashed benchmark (a full disk)
        stage(run)

    guarded(name, work, resume_hint="rerun the same command to resume (finished trials are kept)")


# Names under results/ the harness itself uses: a benchmark of that name would collide.
RESERVED_NAMES = frozenset({"hydra", "test_ledger", "test_ledger.jsonl", "optuna.db"})


def check_output_names(run: RunSettings) -> None:
    """Refuse unsafe benchmark/report/study names, reserved names and output folders that
    are files, before any work (see harness.outputs)."""
    from harness.errors import UserError
    from harness.outputs import check_name, check_study_name

    bench = check_name(run.benchmark.name, "benchmark.name")
    report = check_name(run.report.name, "report.name")
    if run.sweep.study_name:
        check_study_name(str(run.sweep.study_name))
    if bench.lower() in RESERVED_NAMES or bench.endswith((".torn", ".lock")):
        raise UserError(
            f"benchmark.name={bench!r} is reserved: results/{bench} is where the harness keeps "
            f"its own files ({', '.join(sorted(RESERVED_NAMES))}). Choose another name, e.g. "
            f"benchmark.name={run.dataset_name}-bench."
        )
    for key, folder in (
        ("results_dir", run.results_dir),
        ("reports_dir", run.reports_dir),
        ("benchmark.name", run.results_dir / bench),
        ("report.name", run.reports_dir / report),
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

    _guarded("harness-run", run_all, cfg, command_line_model_keys(task_overrides()))


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
