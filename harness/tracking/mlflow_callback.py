"""MLflow: Optuna's own `MLflowCallback` plus the harness' per-epoch curves and tags.

One MLflow run per finished trial (experiment = the study name, or `tracking.mlflow.
experiment`): searched params (Optuna's callback), the final best validation NDCG as
`ndcg_at_<k>` (MLflow names may not contain "@"), per-epoch `val_ndcg_at_<k>`, `loss`,
`val_loss`, `beta`, `lr` as step metrics (step = epoch counted from 1), the fixed params, and
tags study / model / dataset / split_fingerprint / k / state.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial
from optuna_integration.mlflow import MLflowCallback

from harness.tracking.series import epoch_series, study_k, study_tags, summary_values


def metric_key(name: str) -> str:
    """An MLflow-legal metric name: "ndcg@100" -> "ndcg_at_100"."""
    return name.replace("@", "_at_")


class HarnessMLflowCallback(MLflowCallback):
    """`optuna_integration.MLflowCallback` that also logs the trial's per-epoch records."""

    def __init__(self, tracking_uri: str, *, experiment: str | None = None, k: int = 100):
        # "Experiment ... does not exist. Creating a new experiment." on every new study
        logging.getLogger("mlflow.tracking.fluent").setLevel(logging.WARNING)
        kwargs: dict[str, Any] = {}
        self._experiment = experiment
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(
                tracking_uri=tracking_uri,
                metric_name=metric_key(f"ndcg@{k}"),
                create_experiment=experiment is None,
                mlflow_kwargs=kwargs,
                tag_study_user_attrs=False,  # holds the whole config: too long for a tag
                tag_trial_user_attrs=False,  # per-epoch lists: logged as metrics instead
            )

    def _initialize_experiment(self, study: optuna.Study) -> None:
        super()._initialize_experiment(study)
        if self._experiment is not None:
            mlflow.set_experiment(self._experiment)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        k = study_k(study)
        if self._metric_name != metric_key(f"ndcg@{k}"):
            self._metric_name = metric_key(f"ndcg@{k}")
        super().__call__(study, trial)  # params, value, Optuna's tags; ends its run
        run = mlflow.last_active_run()
        if run is None:
            return
        now = int(time.time() * 1000)
        metrics = [
            Metric(metric_key(f"val_ndcg@{k}") if name == "val_ndcg" else name, value, now, step)
            for name, points in epoch_series(trial).items()
            for step, value in points
            if math.isfinite(value)
        ]
        metrics += [Metric(key, value, now, 0) for key, value in summary_values(trial).items()]
        full = trial.user_attrs.get("params_full") or {}
        params = [
            Param(str(key), _param_text(value))
            for key, value in full.items()
            if key not in trial.params
        ]
        tags = [RunTag(key, value) for key, value in study_tags(study).items()]
        client = MlflowClient(self._tracking_uri)
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(
                run.info.run_id,
                metrics=metrics[start : start + 1000],
                params=params if start == 0 else [],
                tags=tags if start == 0 else [],
            )
        if not metrics:
            client.log_batch(run.info.run_id, params=params, tags=tags)


def _param_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def log_benchmark_run(tracking_uri: str, bench_dir: Path, *, experiment: str | None = None) -> str:
    """Log the benchmark's test table (metrics.csv, tests.csv) as one MLflow run.

    Metrics are `<model>/<metric>` (mean over seeds) with `/ci_low` and `/ci_high`; the
    benchmark's CSV files and benchmark.json are attached as artifacts.

    Returns:
        The run id.
    """
    import pandas as pd

    info_path = bench_dir / "benchmark.json"
    import json

    info = json.loads(info_path.read_text())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment or f"{info.get('dataset', 'benchmark')}-benchmark")
    table = pd.read_csv(bench_dir / "metrics.csv")
    metrics = {}
    for row in table.itertuples(index=False):
        base = f"{row.model}/{metric_key(str(row.metric))}"
        for suffix, value in (("", row.mean), ("/ci_low", row.ci_low), ("/ci_high", row.ci_high)):
            if value == value:
                metrics[base + suffix] = float(value)
    with mlflow.start_run(run_name=f"benchmark {info.get('name', bench_dir.name)}") as run:
        mlflow.set_tags(
            {
                "stage": "benchmark",
                "dataset": str(info.get("dataset")),
                "split_fingerprint": str(info.get("split_fingerprint")),
                "baseline": str(info.get("baseline")),
            }
        )
        mlflow.log_params({"n_seeds": info.get("n_seeds"), "test_metric": info.get("test_metric")})
        mlflow.log_metrics(metrics)
        for name in ("metrics.csv", "tests.csv", "seeds.csv", "budget.csv", "benchmark.json"):
            if (bench_dir / name).exists():
                mlflow.log_artifact(str(bench_dir / name))
        return run.info.run_id
