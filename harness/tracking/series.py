"""What a finished trial's records hold, as plain per-epoch series (no tracking library)."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

# trial user attr -> series name (the per-epoch records of harness/sweep/records.py)
EPOCH_SERIES = {
    "ndcg_per_epoch": "val_ndcg",
    "loss_per_epoch": "loss",
    "val_loss_per_epoch": "val_loss",
    "beta_per_epoch": "beta",
    "lr_per_epoch": "lr",
}
SUMMARY_ATTRS = ("wall_seconds", "epochs_run", "best_epoch", "optimal_beta")


def study_k(study: Any) -> int:
    """The NDCG cut-off the study optimises (study user attr "k", default 100)."""
    return int(study.user_attrs.get("k", 100))


def epoch_series(trial: FrozenTrial) -> dict[str, list[tuple[int, float]]]:
    """Series name -> [(step, value)] with step = epoch counted from 1; missing values dropped."""
    out: dict[str, list[tuple[int, float]]] = {}
    for attr, name in EPOCH_SERIES.items():
        points = [
            (epoch + 1, float(value))
            for epoch, value in enumerate(trial.user_attrs.get(attr) or [])
            if value is not None
        ]
        if points:
            out[name] = points
    return out


def summary_values(trial: FrozenTrial) -> dict[str, float]:
    """Numeric facts of the trial (wall seconds, epochs run, best epoch, optimal beta)."""
    out = {}
    for key in SUMMARY_ATTRS:
        value = trial.user_attrs.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def study_tags(study: Any) -> dict[str, str]:
    """Tags naming what the trial belongs to: study, model, dataset, split fingerprint, k."""
    attrs = study.user_attrs
    tags = {"study": study.study_name}
    for key in ("model", "dataset", "split_fingerprint", "k"):
        if attrs.get(key) is not None:
            tags[key] = str(attrs[key])
    return tags
