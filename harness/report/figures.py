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


def ndcg_per_epoch_figure(
    studies: Mapping[str, optuna.Study],
    *,
    k: int,
    chosen: Mapping[str, int | None] | None = None,
) -> Figure:
    """Validation NDCG@k per epoch: every trial faint, one trial bold, one panel per model.

    The bold curve is the trial the benchmark chose for the model (``chosen``: model -> trial
    number, from the benchmark's record), else the search's best trial. Panels share both
    axes so that models compare at a glance; a closed-form model (EASE, popularity: one value
    per trial, no epochs) is drawn as horizontal lines across the epoch axis.
    """
    fig, axes = _panels(len(studies))
    chosen = dict(chosen or {})
    lengths = [
        attr_curve(t, "ndcg_per_epoch").size
        for study in studies.values()
        for t in study.get_trials(deepcopy=False)
    ]
    x_end = max([2, *lengths])

    def draw(ax, curve: np.ndarray, **style) -> None:
        if curve.size == 1:  # closed form: one value, the same at every epoch
            ax.plot([1, x_end], [curve[0], curve[0]], **style)
        else:
            ax.plot(np.arange(1, curve.size + 1), curve, **style)

    for i, (ax, (model, study)) in enumerate(zip(axes, studies.items(), strict=True)):
        color = f"C{i}"
        trials = study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        bold, what = None, "best"
        if chosen.get(model) is not None and chosen[model] in by_number:
            bold, what = by_number[chosen[model]], "benchmarked"
        elif (best := best_trial(study)) is not None:
            bold = best
        for trial in trials:
            curve = attr_curve(trial, "ndcg_per_epoch")
            if not np.isfinite(curve).any() or (bold and trial.number == bold.number):
                continue
            draw(ax, curve, color=color, alpha=0.25, lw=0.8)
        if bold is not None:
            curve = attr_curve(bold, "ndcg_per_epoch")
            score = trial_score(bold)
            draw(ax, curve, color=color, lw=2.4, label=f"{what}: trial {bold.number} ({score:.4f})")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{model} ({len(trials)} trials)")
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
    ndcg_seeds: np.ndarray | None = None  # (n_seeds, epochs): ``ndcg`` is their mean

    @property
    def n_seeds(self) -> int:
        return 1 if self.ndcg_seeds is None else int(self.ndcg_seeds.shape[0])

    @property
    def at_ramp_end(self) -> bool:
        """True when the optimum sits where beta stops growing (it reached the cap): the best
        beta may lie beyond what the ramp tried."""
        finite = self.beta[np.isfinite(self.beta)]
        return bool(finite.size) and self.optimal_beta >= float(finite.max()) - 1e-9

    @property
    def best_epoch(self) -> int:
        """0-based index of the epoch with the best validation NDCG (the model's choice)."""
        return int(np.nanargmax(self.ndcg))

    @property
    def optimal_beta(self) -> float:
        """Beta at the best epoch, as ``get_optimal_beta()`` defines it."""
        return float(self.beta[self.best_epoch])


def beta_figure(runs: Mapping[str, AnnealRun], *, k: int) -> Figure:
    """Validation NDCG@k against beta along the annealing ramp, one panel per model: the mean
    over seeds with a band from the lowest to the highest seed, the optimal beta starred (the
    beta of the mean curve's best epoch), and a warning mark when it sits at the ramp's end."""
    fig, axes = _panels(len(runs), sharex=False, sharey=False)
    for i, (ax, (model, run)) in enumerate(zip(axes, runs.items(), strict=True)):
        color = f"C{i}"
        n = min(run.beta.size, run.ndcg.size)
        beta, ndcg = run.beta[:n], run.ndcg[:n]
        if run.ndcg_seeds is not None and run.n_seeds > 1:
            seeds = run.ndcg_seeds[:, :n]
            ax.fill_between(
                beta,
                np.nanmin(seeds, axis=0),
                np.nanmax(seeds, axis=0),
                color=color,
                alpha=0.2,
                lw=0,
                label=f"range over {run.n_seeds} seeds",
            )
        ax.plot(beta, ndcg, color=color, lw=1.8, label="mean" if run.n_seeds > 1 else None)
        best, beta_star = run.best_epoch, run.optimal_beta
        ax.plot([beta_star], [ndcg[best]], marker="*", ms=14, color="C1", zorder=5)
        note = "\nat the ramp's end!" if run.at_ramp_end else ""
        right_half = beta_star > 0.6 * max(float(np.nanmax(beta)), 1e-12)
        ax.annotate(
            f"optimal β = {beta_star:.3f}\n(epoch {best + 1}){note}",
            (beta_star, ndcg[best]),
            xytext=(-10 if right_half else 10, -34),
            textcoords="offset points",
            ha="right" if right_half else "left",
            fontsize=9,
            color="C3" if run.at_ramp_end else "C1",
        )
        ax.set_title(f"{model}\n{run.source}", fontsize=9)
        ax.set_xlabel("β (KL weight) along the annealing ramp")
        ax.grid(alpha=0.3)
        if run.n_seeds > 1:
            ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel(f"validation NDCG@{k}")
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
    """Objective per finished trial and the best so far (the report's style, not Optuna's)."""
    fig, (ax,) = _panels(1)
    fig.set_size_inches(6.4, 3.6)
    trials = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and np.isfinite(trial_score(t))
    ]
    trials.sort(key=lambda t: t.number)
    if trials:
        x = np.array([t.number for t in trials])
        y = np.array([trial_score(t) for t in trials])
        done = np.array([t.state == TrialState.COMPLETE for t in trials])
        ax.scatter(x[done], y[done], s=18, color="C0", label="trial (complete)")
        if (~done).any():
            ax.scatter(x[~done], y[~done], s=18, facecolors="none", edgecolors="C0", label="pruned")
        best = np.maximum.accumulate(np.where(done, y, -np.inf))
        ok = np.isfinite(best)
        ax.step(x[ok], best[ok], where="post", color="C3", lw=1.6, label="best so far")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation NDCG")
    ax.grid(alpha=0.3)
    return fig


def importances_figure(study: optuna.Study, title: str) -> Figure | str:
    """Parameter importances (fANOVA) as bars in the report's style, or the reason they
    cannot be drawn.

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
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as exc:  # e.g. too little variation for fANOVA's trees
        return f"importances failed: {exc}"
    fig, (ax,) = _panels(1)
    fig.set_size_inches(6.4, 0.6 + 0.35 * max(len(importances), 3))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set_title(title)
    ax.set_xlabel("importance for validation NDCG (fANOVA)")
    ax.grid(alpha=0.3, axis="x")
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
