"""Flat exports of a study: trials.csv, trial_epochs.csv, best_params.yaml.

Plots and reports read these files without touching Optuna's storage internals (as LensKit's
trial-epochs file). Everything here is derived from the study, so re-exporting is always safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import FrozenTrial, TrialState

from harness.sweep.records import EPOCH_KEYS, atomic_write_text, jsonable

TRIAL_COLUMNS = (
    "number",
    "state",
    "value",
    "best_epoch",
    "epochs_run",
    "optimal_beta",
    "wall_seconds",
    "datetime_start",
    "datetime_complete",
    "retried_from",
    "failure_reason",
)
EPOCH_COLUMNS = ("trial", "epoch", *EPOCH_KEYS, "state")


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, value, records and one `params_<name>` column per parameter."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        row: dict[str, Any] = {
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value,
            "best_epoch": attrs.get("best_epoch"),
            "epochs_run": attrs.get("epochs_run"),
            "optimal_beta": attrs.get("optimal_beta"),
            "wall_seconds": attrs.get("wall_seconds"),
            "datetime_start": trial.datetime_start,
            "datetime_complete": trial.datetime_complete,
            "retried_from": trial.system_attrs.get("failed_trial"),
            "failure_reason": attrs.get("failure_reason"),
        }
        row.update({f"params_{k}": v for k, v in trial.params.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=[*TRIAL_COLUMNS, *_param_columns(frame)])


def epochs_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per (trial, epoch). Trials without records (running, or killed with their
    worker) contribute the NDCG values they reported, other columns empty."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.extend(_epoch_rows(trial))
    return pd.DataFrame(rows, columns=list(EPOCH_COLUMNS))


def best_params(study: optuna.Study) -> dict[str, Any]:
    """The best COMPLETE trial's parameters and records; best_trial None when there is none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    counts = {
        f"n_{state.name.lower()}": len(study.get_trials(deepcopy=False, states=(state,)))
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    summary: dict[str, Any] = {
        "study_name": study.study_name,
        **{k: study.user_attrs.get(k) for k in ("model", "dataset", "split_fingerprint", "k")},
        **counts,
        "best_trial": None,
    }
    if not complete:
        return summary
    best = max(complete, key=lambda t: t.value if t.value is not None else float("-inf"))
    summary.update(
        best_trial=best.number,
        best_value=best.value,
        best_epoch=best.user_attrs.get("best_epoch"),
        optimal_beta=best.user_attrs.get("optimal_beta"),
        params=dict(best.params),
        params_full=best.user_attrs.get("params_full", dict(best.params)),
    )
    return jsonable(summary)


def export_study(study: optuna.Study, out_dir: Path | str) -> dict[str, Path]:
    """Write trials.csv, trial_epochs.csv and best_params.yaml into `out_dir` atomically.

    Returns:
        File kind -> path written.
    """
    out_dir = Path(out_dir)
    paths = {
        "trials": out_dir / "trials.csv",
        "epochs": out_dir / "trial_epochs.csv",
        "best_params": out_dir / "best_params.yaml",
    }
    atomic_write_text(paths["trials"], trials_frame(study).to_csv(index=False))
    atomic_write_text(paths["epochs"], epochs_frame(study).to_csv(index=False))
    text = yaml.safe_dump(best_params(study), sort_keys=False, allow_unicode=True)
    atomic_write_text(paths["best_params"], text)
    return paths


def _param_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if c.startswith("params_"))


def _epoch_rows(trial: FrozenTrial) -> list[dict[str, Any]]:
    attrs = trial.user_attrs
    state = trial.state.name
    if "ndcg_per_epoch" not in attrs:
        return [
            {"trial": trial.number, "epoch": step, "ndcg": value, "state": state}
            for step, value in sorted(trial.intermediate_values.items())
        ]
    series = {key: attrs.get(f"{key}_per_epoch") or [] for key in EPOCH_KEYS}
    rows = []
    for epoch in range(len(series["ndcg"])):
        row: dict[str, Any] = {"trial": trial.number, "epoch": epoch, "state": state}
        row.update({k: v[epoch] if epoch < len(v) else None for k, v in series.items()})
        rows.append(row)
    return rows
