"""Report figures, each a free function of plain data or Optuna studies returning a Figure.

Reads only trial user attributes (written by harness/sweep/records.py: "ndcg_per_epoch",
"beta_per_epoch", "params_full", ...), so it works for pruned, failed and still-running trials alike. Epochs
are shown counted from 1 (the first point is the model after one epoch).

Own figures are plain ``Figure`` objects (no pyplot state, so no backend and nothing to
leak); Optuna's plots go through pyplot and are closed by ``save_figure``. Entry points
select the Agg backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

_PANEL = (4.2, 3.2)


def attr_curve(trial: FrozenTrial, key: str) -> np.ndarray:
    """A per-epoch user attribute of a trial as floats (None -> NaN; missing -> empty)."""
    values = trial.user_attrs.get(key) or []
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def trial_score(trial: FrozenTrial) -> float:
    """The trial's value, or for an unfinished trial its best NDCG so far (NaN if none)."""
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return float(trial.value)
    curve = attr_curve(trial, "ndcg_per_epoch")
    return float(np.nanmax(curve)) if np.isfinite(curve).any() else float("nan")


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None while the study has none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def _panels(n: int, *, sharex: bool = True, sharey: bool = True) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(_PANEL[0] * n, _PANEL[1]), layout="tight")
    axes = fig.subplots(1, n, sharex=sharex, sharey=sharey, squeeze=False)
    return fig, axes[0]


def ndcg_per_epoch_figure(studies: Mapping[str, optuna.Study], *, k: int) -> Figure:
    """Validation NDCG@k per epoch: every trial faint, the best trial bold, one panel per model.

    Panels share both axes so that models compare at a glance. Non-iterative models (EASE,
    popularity) have one point per trial.
    """
    fig, axes = _panels(len(studies))
    for i, (ax, (model, study)) in enumerate(zip(axes, studies.items(), strict=True)):
        color = f"C{i}"
        best = best_trial(study)
        for trial in study.get_trials(deepcopy=False):
            curve = attr_curve(trial, "ndcg_per_epoch")
            if not np.isfinite(curve).any() or (best and trial.number == best.number):
                continue
            ax.plot(
                np.arange(1, curve.size + 1),
                curve,
                color=color,
                alpha=0.25,
                lw=0.8,
                marker="o" if curve.size == 1 else None,
                ms=3,
            )
        if best is not None:
            curve = attr_curve(best, "ndcg_per_epoch")
            ax.plot(
                np.arange(1, curve.size + 1),
                curve,
                color=color,
                lw=2.4,
                marker="o" if curve.size == 1 else None,
                label=f"best: trial {best.number} ({best.value:.4f})",
            )
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{model} ({len(study.trials)} trials)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"validation NDCG@{k}")
    return fig


@dataclass(frozen=True)
class AnnealRun:
    """Per-epoch beta and validation NDCG of one annealing run, and where it came from.

    Attributes:
        beta: KL weight at the end of each epoch.
        ndcg: validation NDCG@k after each epoch.
        source: a label such as "Liang procedure, anneal_cap 1.0, seed 0".
    """

    beta: np.ndarray
    ndcg: np.ndarray
    source: str

    @property
    def best_epoch(self) -> int:
        """0-based index of the epoch with the best validation NDCG (the model's choice)."""
        return int(np.nanargmax(self.ndcg))

    @property
    def optimal_beta(self) -> float:
        """Beta at the best epoch, as ``get_optimal_beta()`` defines it."""
        return float(self.beta[self.best_epoch])


def beta_figure(runs: Mapping[str, AnnealRun], *, k: int) -> Figure:
    """Beta per epoch with validation NDCG@k on a twin axis, optimal beta marked and labelled."""
    fig, axes = _panels(len(runs), sharex=False, sharey=False)
    for ax, (model, run) in zip(axes, runs.items(), strict=True):
        epochs = np.arange(1, run.beta.size + 1)
        ax.plot(epochs, run.beta, color="C0", lw=1.8, label="β")
        ax.set_ylabel("β (KL weight)", color="C0")
        twin = ax.twinx()
        twin.plot(epochs, run.ndcg, color="C3", lw=1.4, label=f"NDCG@{k}")
        twin.set_ylabel(f"validation NDCG@{k}", color="C3")
        best, beta_star = run.best_epoch, run.optimal_beta
        ax.axvline(best + 1, color="0.4", ls=":", lw=1)
        ax.plot([best + 1], [beta_star], marker="*", ms=14, color="C1", zorder=5)
        right_half = best + 1 > 0.6 * max(run.beta.size, 1)  # keep the label inside the axes
        ax.annotate(
            f"optimal β = {beta_star:.3f}\n(epoch {best + 1})",
            (best + 1, beta_star),
            xytext=(-10 if right_half else 10, -30),
            textcoords="offset points",
            ha="right" if right_half else "left",
            fontsize=9,
            color="C1",
        )
        ax.set_title(f"{model}\n{run.source}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return fig


def beta_param(trial: FrozenTrial) -> tuple[str, float] | None:
    """("anneal_cap", cap) for an annealing trial, ("beta", beta) otherwise; None if neither."""
    params = {**trial.user_attrs.get("params_full", {}), **trial.params}
    if params.get("annealing") and params.get("anneal_cap") is not None:
        return "anneal_cap", float(params["anneal_cap"])
    if params.get("beta") is not None:
        return "beta", float(params["beta"])
    return None


def ndcg_vs_beta_figure(studies: Mapping[str, optuna.Study], *, k: int) -> Figure:
    """Validation NDCG@k against beta (constant-beta trials) or anneal_cap, one panel per VAE.

    Unfinished trials are plotted hollow at their best NDCG so far; failed trials without a
    single epoch have no point.
    """
    fig, axes = _panels(len(studies))
    for ax, (model, study) in zip(axes, studies.items(), strict=True):
        for name, marker in (("anneal_cap", "o"), ("beta", "s")):
            for done in (True, False):
                pts = [
                    (bp[1], trial_score(t))
                    for t in study.get_trials(deepcopy=False)
                    if (bp := beta_param(t))
                    and bp[0] == name
                    and (t.state == TrialState.COMPLETE) == done
                ]
                pts = [p for p in pts if np.isfinite(p[1])]
                if pts:
                    x, y = zip(*pts, strict=True)
                    ax.scatter(
                        x,
                        y,
                        marker=marker,
                        s=28,
                        alpha=0.8,
                        facecolors=f"C{0 if name == 'anneal_cap' else 2}" if done else "none",
                        edgecolors=f"C{0 if name == 'anneal_cap' else 2}",
                        label=f"{name}{'' if done else ' (pruned/unfinished)'}",
                    )
        ax.set_title(model)
        ax.set_xlabel("β or anneal_cap")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    axes[0].set_ylabel(f"validation NDCG@{k} (best epoch)")
    return fig


def optimization_history_figure(study: optuna.Study, title: str) -> Figure:
    """Optuna's optimisation history plot (objective per trial and best so far)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            study, target_name="validation NDCG"
        )
    _one_title(ax, title)
    fig = ax.figure
    fig.set_size_inches(6.4, 3.6)
    fig.tight_layout()
    return fig


def _one_title(ax: plt.Axes, title: str) -> None:
    """Replace Optuna's own title (drawn left-aligned) with ours, so only one is drawn."""
    for loc in ("left", "right"):
        ax.set_title("", loc=loc)
    ax.set_title(title)


def importances_figure(study: optuna.Study, title: str) -> Figure | str:
    """Optuna's parameter-importance plot, or the reason it cannot be drawn.

    fANOVA importances need at least two complete trials and a parameter that varied among
    them; a single-trial or fixed-configuration study returns an explanatory string instead.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"{len(complete)} complete trial(s); importances need at least 2"
    varying = [
        p
        for p in {p for t in complete for p in t.params}
        if len({repr(t.params.get(p)) for t in complete}) > 1
    ]
    if not varying:
        return "no searched parameter varied across the complete trials"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ax = optuna.visualization.matplotlib.plot_param_importances(study)
    except (ValueError, RuntimeError) as exc:  # e.g. too little variation for fANOVA's trees
        return f"importances failed: {exc}"
    _one_title(ax, title)
    fig = ax.figure
    fig.set_size_inches(6.4, 3.6)
    fig.tight_layout()
    return fig


def test_metrics_figure(metrics: pd.DataFrame, names: Sequence[str]) -> Figure:
    """Dot plot of test metrics: mean over seeds with 95% CI bars, one panel per metric."""
    shown = [m for m in names if m in set(metrics["metric"])]
    # metrics live on different scales: share the model axis only
    fig, axes = _panels(max(len(shown), 1), sharex=False, sharey=True)
    for ax, name in zip(axes, shown, strict=False):
        rows = metrics[metrics["metric"] == name].reset_index(drop=True)
        y = np.arange(len(rows))
        err = np.vstack([rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]])
        ax.errorbar(rows["mean"], y, xerr=np.nan_to_num(err), fmt="o", capsize=4, color="C0")
        ax.set_yticks(y, rows["model"])
        ax.set_ylim(len(rows) - 0.5, -0.5)  # first model on top, as in the table
        ax.set_title(f"test {name}")
        ax.grid(alpha=0.3, axis="x")
    return fig


def save_figure(fig: Figure, folder: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` into ``folder`` and close the figure."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=120)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths
