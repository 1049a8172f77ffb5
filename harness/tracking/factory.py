"""Tracking settings -> checked backends and Optuna callbacks."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.secrets import mask_text, reveal
from harness.tracking.settings import TrackingConfigError, TrackingSettings

log = logging.getLogger("harness.tracking")
INSTALL_HINT = "pip install 'vae-sweep[mlflow]'"


def check_tracking(settings: TrackingSettings) -> TrackingSettings:
    """Check every enabled backend before the sweep starts; return the settings to use.

    MLflow: installed, URI well-formed and its store reachable (one cheap query, no retries).
    TensorBoard: the folder can be created.

    Returns:
        `settings`, or with MLflow switched off when it failed and `tracking.mlflow.required`
        is false (a warning says why).

    Raises:
        TrackingConfigError: A check failed (and MLflow is required), naming the key and fix.
    """
    if settings.tensorboard_dir:
        path = Path(settings.tensorboard_dir).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrackingConfigError(
                f"tracking.tensorboard.dir={settings.tensorboard_dir}: cannot create it "
                f"({error}); give a writable folder, or null for no TensorBoard."
            ) from None
    if settings.mlflow_uri:
        try:
            _check_mlflow(settings.mlflow_uri)
        except TrackingConfigError as error:
            if settings.mlflow_required:
                raise
            log.warning("%s; going on without MLflow (tracking.mlflow.required=false)", error)
            return dataclasses.replace(settings, mlflow_uri=None)
    return settings


def _check_mlflow(uri: str) -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError as error:
        raise TrackingConfigError(
            f"tracking.mlflow.uri={mask_text(uri)} is set but MLflow is not installed ({error.name} "
            f"missing): {INSTALL_HINT}, or set tracking.mlflow.uri=null."
        ) from None
    from mlflow.tracking import MlflowClient

    with _no_http_retries():
        try:
            MlflowClient(reveal(uri)).search_experiments(max_results=1)
        except Exception as error:  # mlflow raises many types (MlflowException, OSError, ...)
            first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            first = mask_text(first.replace(reveal(uri), uri))
            raise TrackingConfigError(
                f"tracking.mlflow.uri={mask_text(uri)}: cannot reach the MLflow tracking store "
                f"({type(error).__name__}: {first}). Use a reachable server "
                "(http://host:5000) or a local store such as sqlite:///$PWD/mlflow.db, or "
                "tracking.mlflow.required=false to go on without MLflow."
            ) from None


@contextlib.contextmanager
def _no_http_retries() -> Iterator[None]:
    # MLflow retries an unreachable server with backoff for minutes by default.
    changes = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Guarded:
    """An Optuna callback whose failure (say, a tracking server restarting) warns, not kills.

    The sweep's own records are in the Optuna storage either way; losing one trial's copy in a
    tracker should not stop hours of training.
    """

    def __init__(self, callback: Any):
        self.callback = callback

    def __call__(self, study: Any, trial: Any) -> None:
        try:
            self.callback(study, trial)
        except Exception as error:
            log.warning(
                "%s failed for trial %d (%s: %s); the sweep goes on",
                type(self.callback).__name__,
                trial.number,
                type(error).__name__,
                error,
            )


def make_callbacks(settings: TrackingSettings) -> list[Any]:
    """The Optuna callbacks of the enabled backends (call `check_tracking` first).

    Each is wrapped in `Guarded`: a tracking failure mid-sweep is a warning.
    """
    callbacks: list[Any] = []
    if settings.mlflow_uri:
        from harness.tracking.mlflow_callback import MLflowCallback

        callbacks.append(MLflowCallback(settings.mlflow_uri, experiment=settings.mlflow_experiment))
    if settings.tensorboard_dir:
        from harness.tracking.tensorboard_callback import TensorBoardCallback

        callbacks.append(TensorBoardCallback(settings.tensorboard_dir))
    return [Guarded(callback) for callback in callbacks]


def log_benchmark(settings: TrackingSettings, bench_dir: Path) -> str | None:
    """Log the benchmark's test table to MLflow when enabled; returns the run id (or None)."""
    if not settings.mlflow_uri:
        return None
    from harness.tracking.mlflow_callback import log_benchmark_run

    experiment = settings.mlflow_experiment
    return log_benchmark_run(settings.mlflow_uri, Path(bench_dir), experiment=experiment)
