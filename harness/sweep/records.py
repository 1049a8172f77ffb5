"""Trial records: per-epoch logs -> trial user attrs (names the report reads), and plain exports.

User attrs per trial: ndcg_per_epoch, loss_per_epoch, val_loss_per_epoch, beta_per_epoch,
lr_per_epoch (NaN -> None, since JSON storages cannot hold NaN), optimal_beta, best_epoch,
epochs_run, wall_seconds, split_fingerprint, params_full, and failure_reason on failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

EPOCH_KEYS = ("ndcg", "loss", "val_loss", "beta", "lr")


def finite_or_none(value: Any) -> float | None:
    """A float, or None for NaN/inf/missing (JSON, and so Optuna storages, have no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def jsonable(value: Any) -> Any:
    """Numpy scalars/arrays, tuples and paths -> plain JSON-ready Python values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class EpochLog:
    """What the model reported after each epoch, in order (epoch = list position)."""

    values: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in EPOCH_KEYS})

    def add(self, logs: dict[str, Any]) -> float:
        """Append one epoch's logs (missing keys -> NaN); return its NDCG (may be NaN)."""
        for key in EPOCH_KEYS:
            value = logs.get(key)
            self.values[key].append(float("nan") if value is None else float(value))
        return self.values["ndcg"][-1]

    @property
    def epochs_run(self) -> int:
        return len(self.values["ndcg"])

    @property
    def best_epoch(self) -> int | None:
        """Epoch of the best finite NDCG; None if there is none (diverged at once)."""
        ndcg = np.asarray(self.values["ndcg"], dtype=float)
        if not np.isfinite(ndcg).any():
            return None
        return int(np.nanargmax(np.where(np.isfinite(ndcg), ndcg, np.nan)))

    @property
    def best_ndcg(self) -> float:
        """Best validation NDCG over the epochs; NaN if no epoch produced one."""
        epoch = self.best_epoch
        return float("nan") if epoch is None else self.values["ndcg"][epoch]

    def user_attrs(self) -> dict[str, Any]:
        """The per-epoch lists, best_epoch, optimal_beta (beta at best_epoch), epochs_run."""
        attrs: dict[str, Any] = {
            f"{key}_per_epoch": [finite_or_none(v) for v in self.values[key]] for key in EPOCH_KEYS
        }
        epoch = self.best_epoch
        attrs["best_epoch"] = epoch
        attrs["optimal_beta"] = (
            None if epoch is None else finite_or_none(self.values["beta"][epoch])
        )
        attrs["epochs_run"] = self.epochs_run
        return attrs


def record_trial(
    trial: Any, epochs: EpochLog, *, wall_seconds: float, failure_reason: str | None = None
) -> None:
    """Store the trial's records as user attrs (call before the trial is finished).

    Args:
        trial: An optuna Trial or FixedTrial.
        epochs: What the model reported.
        wall_seconds: Build + fit + evaluation time of the trial.
        failure_reason: Set only for failed trials.
    """
    attrs = epochs.user_attrs()
    attrs["wall_seconds"] = round(wall_seconds, 3)
    if failure_reason is not None:
        attrs["failure_reason"] = failure_reason
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file + rename, so readers never see half a file."""
    from harness.outputs import write_text

    write_text(path, text)
