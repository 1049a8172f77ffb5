"""The `tracking.*` config keys as a typed, validated dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.sweep.settings import SweepConfigError


class TrackingConfigError(SweepConfigError):
    """A tracking setting is invalid or its backend unreachable; names the key and the fix.

    A `SweepConfigError`, so the commands report it like any other config error (exit 2).
    """


@dataclass(frozen=True)
class TrackingSettings:
    """Where trials are tracked; every field is a `tracking.*` key.

    Attributes:
        mlflow_uri: MLflow tracking URI (`sqlite:///abs/mlflow.db`, `http://host:5000`, ...);
            None = no MLflow.
        mlflow_experiment: MLflow experiment of the trials; None = one per study (its name).
        mlflow_required: True = an unreachable or malformed URI stops the command before the
            sweep starts; False = a warning, and the run goes on without MLflow.
        tensorboard_dir: Folder of TensorBoard event files, one run per trial under
            `<dir>/<study>/trial_<n>`; None = no TensorBoard.
    """

    mlflow_uri: str | None = None
    mlflow_experiment: str | None = None
    mlflow_required: bool = True
    tensorboard_dir: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.mlflow_uri or self.tensorboard_dir)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> TrackingSettings:
        """From the resolved `cfg.tracking` ({mlflow: {uri, ...}, tensorboard: {dir}}).

        Raises:
            TrackingConfigError: An unknown key (typo guard).
        """
        values = dict(values or {})
        mlflow = dict(values.pop("mlflow", None) or {})
        tensorboard = dict(values.pop("tensorboard", None) or {})
        unknown = [f"tracking.{k}" for k in values]
        unknown += [
            f"tracking.mlflow.{k}" for k in mlflow if k not in ("uri", "experiment", "required")
        ]
        unknown += [f"tracking.tensorboard.{k}" for k in tensorboard if k != "dir"]
        if unknown:
            raise TrackingConfigError(
                f"unknown tracking setting(s) {', '.join(sorted(unknown))}; valid keys are "
                "tracking.mlflow.uri, tracking.mlflow.experiment, tracking.mlflow.required, "
                "tracking.tensorboard.dir."
            )
        return cls(
            mlflow_uri=_text(mlflow.get("uri")),
            mlflow_experiment=_text(mlflow.get("experiment")),
            mlflow_required=bool(mlflow.get("required", True)),
            tensorboard_dir=_text(tensorboard.get("dir")),
        )


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value)
