"""Experiment tracking: MLflow and TensorBoard, both optional and off by default.

Enabled from config (`conf/tracking/default.yaml`):

    harness-sweep tracking.mlflow.uri=sqlite:///$PWD/mlflow.db
    harness-run tracking.tensorboard.dir=$PWD/tb

Both are Optuna callbacks (`run_sweep(..., callbacks=...)`): after each finished trial they
log its parameters, its value and its per-epoch curves (validation NDCG@k, loss, beta, ...,
read from the trial's records), so nothing is added to the training loop. The benchmark's
test table goes to MLflow as one more run (`log_benchmark`).

MLflow needs the extra: `pip install 'vae-sweep[mlflow]'`.
"""

from harness.tracking.factory import check_tracking, log_benchmark, make_callbacks
from harness.tracking.settings import TrackingConfigError, TrackingSettings

__all__ = [
    "TrackingConfigError",
    "TrackingSettings",
    "check_tracking",
    "log_benchmark",
    "make_callbacks",
]
