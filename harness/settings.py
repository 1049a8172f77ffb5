"""The typed settings of a run, built once from the composed config at the entry point.

`RunSettings.from_config(cfg)` validates every part of `harness-run`'s (and
`harness-benchmark`'s, `harness-report`'s) config into typed settings, each stage's its own:
the models (`ModelConfig`), `SweepSettings`, `BenchmarkSettings`, `TrackingSettings`,
`ExecutorSettings`, `ReportSettings`, and the dataset, protocol and folders. A bad key or value
fails here, in one line, before any data is loaded; the stages below the entry points get their
part and never read the config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.benchmark import BenchmarkSettings
from harness.errors import UserError, check_known_keys
from harness.execution.settings import ExecutorSettings
from harness.outputs import results_dir_of
from harness.sweep.settings import ModelConfig, SweepSettings, models_of
from harness.tracking.settings import TrackingSettings

__all__ = ["ModelConfig", "ReportSettings", "RunSettings", "benchmark_settings"]


class ReportConfigError(UserError, ValueError):
    """An unknown `report.*` key (the message lists the valid ones)."""


@dataclass(frozen=True)
class ReportSettings:
    """The `report.*` keys.

    Attributes:
        name: reports/<name>/.
        require_benchmark: Fail when results/<benchmark.name>/ is missing (else the report
            shows the sweeps only).
        published: Published numbers shown beside the measured ones ({source, models}).
    """

    name: str
    require_benchmark: bool = False
    published: Mapping[str, Any] | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ReportSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        check_known_keys("report", values, names, ReportConfigError, "option")
        return cls(**values)


def benchmark_settings(values: Mapping[str, Any], models: tuple[str, ...]) -> BenchmarkSettings:
    """`BenchmarkSettings` from the resolved `cfg.benchmark` and the run's models.

    Raises:
        StatsConfigError: an unknown `benchmark.*` key, or an invalid/contradictory option.
    """
    from harness.benchmark.stats import StatsConfigError

    b = dict(values)
    known = {f.name for f in dataclasses.fields(BenchmarkSettings)} - {"models"}
    check_known_keys("benchmark", b, known, StatsConfigError, "option")
    for key in ("fixed_models", "ks", "protocol_seeds"):  # protocol_seeds: refused
        if b.get(key) is not None:
            b[key] = tuple(b[key])
    return BenchmarkSettings(models=models, **b)


@dataclass(frozen=True)
class RunSettings:
    """Everything `harness-run`, `harness-benchmark` and `harness-report` act on, typed.

    Attributes:
        dataset: The resolved `dataset` group (the data module's own keys).
        protocol: The resolved `protocol` group (`protocol.fold` set for one fold).
        models: Every model of the run, in report order.
        sweep: The sweep settings (`sweep.*`, the budget's trials).
        benchmark: The benchmark settings (`benchmark.*`, the run's models).
        tracking: MLflow / TensorBoard (`tracking.*`).
        executor: Where training jobs run (`executor.*` and the `sweep` keys it shares).
        report: The `report.*` keys.
        results_dir: Absolute `results_dir`.
        reports_dir: Absolute `reports_dir`.
        data_dir: The cache of downloads and splits (None: the default cache).
        config: The composed config as plain containers, recorded as it is (each study's
            "config" attribute, the report's manifest).
        overridden: Model -> keys of its config set on the command line (refused where its
            search space samples them).
    """

    dataset: Mapping[str, Any]
    protocol: Mapping[str, Any]
    models: tuple[ModelConfig, ...]
    sweep: SweepSettings
    benchmark: BenchmarkSettings
    tracking: TrackingSettings
    executor: ExecutorSettings
    report: ReportSettings
    results_dir: Path
    reports_dir: Path
    data_dir: str | None
    config: Mapping[str, Any] = field(repr=False)
    overridden: Mapping[str | None, Collection[str]] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls,
        cfg: Mapping[str, Any],
        overridden: Mapping[str | None, Collection[str]] | None = None,
    ) -> RunSettings:
        """Validate the resolved config of `conf/run.yaml` (plain containers) into settings.

        Raises:
            UserError: One line naming the bad key (sweep, benchmark, tracking, executor,
                report settings, an unknown model).
        """
        from harness.models.registry import model_spec

        models = models_of(cfg)
        names = tuple(model_spec(m.name).name for m in models)  # unknown model: one line first
        return cls(
            dataset=dict(cfg["dataset"]),
            protocol=dict(cfg["protocol"]),
            models=models,
            sweep=SweepSettings.from_mapping(cfg.get("sweep") or {}).replace(models=None),
            benchmark=benchmark_settings(cfg.get("benchmark") or {}, names),
            tracking=TrackingSettings.from_mapping(cfg.get("tracking")),
            executor=ExecutorSettings.from_config(cfg),
            report=ReportSettings.from_mapping(
                cfg.get("report") or {"name": cfg["dataset"]["name"]}
            ),
            results_dir=results_dir_of(cfg),
            reports_dir=Path(cfg.get("reports_dir") or "reports").expanduser().resolve(),
            data_dir=cfg.get("data_dir"),
            config=cfg,
            overridden=dict(overridden or {}),
        )

    @property
    def dataset_name(self) -> str:
        return str(self.dataset["name"])

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def tuned(self) -> tuple[ModelConfig, ...]:
        """The models that are swept (not `benchmark.fixed_models`)."""
        return tuple(m for m in self.models if m.name not in self.benchmark.fixed_models)

    def model(self, name: str) -> ModelConfig:
        return next(m for m in self.models if m.name == name)

    @property
    def fold(self) -> int | None:
        """`protocol.fold`: the one fold this run works on, or None."""
        return self.protocol.get("fold")

    @property
    def fold_count(self) -> int | None:
        """K when the run cross-validates over every fold (`protocol.folds` set,
        `protocol.fold` not); None for one split."""
        if self.protocol.get("folds") and self.protocol.get("fold") is None:
            return int(self.protocol["folds"])
        return None

    def for_fold(self, fold: int) -> RunSettings:
        """The settings of one fold: its split (`protocol.fold`), its own studies (named by the
        fold's split fingerprint, or `<sweep.study_name>-fold<k>`) and its own benchmark folder
        (`<benchmark.name>-fold<k>`), so nothing of another fold's test users is used."""
        from harness.benchmark.folds import fold_name

        sweep = self.sweep
        if sweep.study_name:
            sweep = sweep.replace(study_name=f"{sweep.study_name}-fold{fold}")
        protocol = {**self.protocol, "fold": fold}
        benchmark = dataclasses.replace(self.benchmark, name=fold_name(self.benchmark.name, fold))
        config = {
            **self.config,
            "protocol": protocol,
            "sweep": {**self.config.get("sweep", {}), "study_name": sweep.study_name},
            "benchmark": {**self.config.get("benchmark", {}), "name": benchmark.name},
        }
        return dataclasses.replace(
            self, protocol=protocol, sweep=sweep, benchmark=benchmark, config=config
        )
