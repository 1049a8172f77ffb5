"""MLflow: one run per finished trial, and one for the benchmark's test table.

Written against MLflow's client API rather than `optuna_integration.MLflowCallback`, which
Optuna deprecated in 4.9 (removal in 6.0); MLflow's own Optuna module is a storage, not a
callback. Per trial (experiment = the study name, or `tracking.mlflow.experiment`):

- params: the searched parameters and the fixed ones (`params_full`);
- metrics: the final best validation NDCG as `ndcg_at_<k>` (MLflow names may not hold "@"),
  per-epoch `val_ndcg_at_<k>`, `loss` and `beta` as step metrics (step = epoch counted from
  1), and `wall_seconds`, `epochs_run`, `best_epoch`, `optimal_beta`;
- tags: study, model, dataset, split_fingerprint, k, number, state.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import optuna
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from harness.secrets import reveal
from harness.tracking.series import epoch_series, study_k, study_tags, summary_values

BATCH = 1000  # MLflow's limit of metrics per log_batch call
# Per-epoch series logged as step metrics. MLflow's SQL store inserts metrics one ORM row at a
# time (~2 ms each), so val_loss and lr (in the trial records and TensorBoard) are left out to
# keep logging under 2% of a trial; pass series=tuple(EPOCH_SERIES.values()) for all.
STEP_SERIES = ("val_ndcg", "loss", "beta")


def metric_key(name: str) -> str:
    """An MLflow-legal metric name: "ndcg@100" -> "ndcg_at_100"."""
    return name.replace("@", "_at_")


def artifact_location(tracking_uri: str, name: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store's file.

    MLflow's default for database stores is ./mlruns under the current folder, which scatters
    artifacts wherever a command happens to run; file stores keep their own.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///") :]).expanduser().resolve()
    return (db.parent / "mlartifacts" / name).as_uri()


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if needed (parallel workers may race to create)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=artifact_location(client.tracking_uri, name)
        )
    except MlflowException:  # another worker created it in between
        return client.get_experiment_by_name(name).experiment_id


class MLflowCallback:
    """Optuna callback: log each finished trial as one MLflow run (see the module docstring).

    Picklable (it holds only strings), so spawned sweep workers get their own copy.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment: str | None = None,
        series: tuple[str, ...] = STEP_SERIES,
    ):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.series = series
        self._ids: dict[str, str] = {}

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> str:
        """Log `trial`; returns the MLflow run id."""
        client = MlflowClient(reveal(self.tracking_uri))
        name = self.experiment or study.study_name
        if name not in self._ids:
            self._ids[name] = experiment_id(client, name)
        k = study_k(study)
        tags = {**study_tags(study), "number": str(trial.number), "state": trial.state.name}
        run = client.create_run(self._ids[name], run_name=f"trial {trial.number}", tags=tags)
        now = int(time.time() * 1000)
        metrics = [
            Metric(metric_key(f"val_ndcg@{k}") if key == "val_ndcg" else key, value, now, step)
            for key, points in epoch_series(trial).items()
            if key in self.series
            for step, value in points
            if math.isfinite(value)
        ]
        metrics += [Metric(key, value, now, 0) for key, value in summary_values(trial).items()]
        if trial.value is not None and math.isfinite(trial.value):
            metrics.append(Metric(metric_key(f"ndcg@{k}"), float(trial.value), now, 0))
        full = {**(trial.user_attrs.get("params_full") or {}), **trial.params}
        params = [Param(str(key), _text(value)) for key, value in full.items()]
        for start in range(0, max(len(metrics), 1), BATCH):
            client.log_batch(
                run.info.run_id,
                metrics=metrics[start : start + BATCH],
                params=params if start == 0 else [],
            )
        ok = trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        client.set_terminated(run.info.run_id, RunStatus.to_string(_status(ok)))
        return run.info.run_id


def _status(ok: bool) -> int:
    return RunStatus.FINISHED if ok else RunStatus.FAILED


def _text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def log_benchmark_run(tracking_uri: str, bench_dir: Path, *, experiment: str | None = None) -> str:
    """Log the benchmark's test table as one MLflow run; returns its id.

    Metrics `<model>/<metric>` (mean over seeds) with `/ci_low` and `/ci_high`, from
    metrics.csv; the benchmark's CSV files and benchmark.json attached as artifacts.
    Experiment: `tracking.mlflow.experiment`, else `<dataset>-benchmark`.
    """
    import pandas as pd

    info = json.loads((bench_dir / "benchmark.json").read_text())
    client = MlflowClient(reveal(tracking_uri))
    exp = experiment_id(client, experiment or f"{info.get('dataset', 'benchmark')}-benchmark")
    tags = {
        "stage": "benchmark",
        "dataset": str(info.get("dataset")),
        "split_fingerprint": str(info.get("split_fingerprint")),
        "baseline": str(info.get("baseline")),
    }
    run = client.create_run(exp, run_name=f"benchmark {info.get('name', bench_dir.name)}")
    now = int(time.time() * 1000)
    metrics = []
    for row in pd.read_csv(bench_dir / "metrics.csv").itertuples(index=False):
        base = f"{row.model}/{metric_key(str(row.metric))}"
        for suffix, value in (("", row.mean), ("/ci_low", row.ci_low), ("/ci_high", row.ci_high)):
            if value == value:  # NaN: a deterministic model's interval is still logged as is
                metrics.append(Metric(base + suffix, float(value), now, 0))
    params = [
        Param(key, str(info[key])) for key in ("n_seeds", "test_metric", "name") if key in info
    ]
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=params,
        tags=[RunTag(key, value) for key, value in tags.items()],
    )
    for name in ("metrics.csv", "tests.csv", "seeds.csv", "budget.csv", "benchmark.json"):
        if (bench_dir / name).exists():
            client.log_artifact(run.info.run_id, str(bench_dir / name))
    client.set_terminated(run.info.run_id)
    return run.info.run_id
