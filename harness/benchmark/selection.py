"""Seed-aware selection: a model's candidate configurations (the top trials of its study),
each retrained over the selection seeds, and the one with the best mean validation NDCG.
Also what the study's trials cost (the budget table's row).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from harness.benchmark.training import FitResult

log = logging.getLogger("harness.benchmark")


def candidates(study: optuna.Study | None, fixed_params: dict[str, Any], n: int) -> list[dict]:
    """The top ``n`` distinct complete trials by value, each as {trial, search_value, params}.

    Parameters are the trial's recorded full parameters (``params_full``), falling back to
    the fixed parameters updated with the searched ones. Without a study: the fixed config.
    """
    if study is None:
        return [{"trial": None, "search_value": None, "params": dict(fixed_params)}]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    out, seen = [], set()
    for t in sorted(complete, key=lambda t: t.value, reverse=True):
        params = dict(t.user_attrs.get("params_full") or {**fixed_params, **t.params})
        key = repr(sorted(params.items()))
        if key not in seen:
            seen.add(key)
            out.append({"trial": t.number, "search_value": t.value, "params": params})
        if len(out) == n:
            break
    return out


class Selection:
    """The choice among one model's candidates, fed their fits over the seeds in any order.

    A candidate is rated (its validation NDCG over the seeds recorded in it) once its fits
    and those of every candidate before it have arrived, so candidates are rated in their
    order whatever order the fits finish in, and a tie goes to the earlier candidate. Only
    the best candidate so far keeps its fits; with ``keep_models=False`` not even their
    models (a seeded model's test runs use fresh seeds, so no selection fit is kept).

    Attributes:
        chosen: the winning candidate (None until every candidate is rated).
        chosen_fits: its fits, in seed order.
    """

    def __init__(
        self, model: str, cands: list[dict], seeds: list[int], *, keep_models: bool
    ) -> None:
        self.model, self.cands, self.seeds, self.keep_models = model, cands, seeds, keep_models
        self.chosen: dict | None = None
        self.chosen_fits: list[FitResult] | None = None
        self._fits: dict[tuple[int, int], FitResult] = {}  # (candidate, seed index) -> fit
        self._rated = 0  # candidates rated so far
        self._best: tuple[float, dict, list[FitResult]] | None = None

    def add(self, candidate: int, seed_index: int, fit: FitResult) -> bool:
        """Record one fit; True once the choice is made (every candidate rated).

        Raises:
            RuntimeError: every candidate diverged on every seed.
        """
        if not self.keep_models:
            fit = FitResult(None, fit.facts, fit.history)
        self._fits[(candidate, seed_index)] = fit
        n_seeds = len(self.seeds)
        while self._rated < len(self.cands) and all(
            (self._rated, j) in self._fits for j in range(n_seeds)
        ):
            fits = [self._fits.pop((self._rated, j)) for j in range(n_seeds)]
            self._best = rate(self.model, self.cands[self._rated], fits, self.seeds, self._best)
            self._rated += 1
            del fits
            gc.collect()  # drop a losing candidate's models before more are trained
        if self._rated < len(self.cands):
            return False
        self.chosen, self.chosen_fits = chosen(self.model, self._best)
        self._best = None
        return True


def rate(model: str, cand: dict, fits: list[FitResult], seeds: list[int], best):
    """Record a candidate's validation NDCG over the seeds (in ``cand``); the new best
    (mean, candidate, fits), ``best`` unless this candidate beats it."""
    vals = [f.facts["val_ndcg"] for f in fits]
    log.info(
        "%s: %s over seeds %s: validation NDCG %s (%.0f s)",
        model,
        "fixed configuration" if cand["trial"] is None else f"trial {cand['trial']}",
        seeds,
        ", ".join(f"{v:.4f}" for v in vals),
        sum(f.facts["wall_seconds"] for f in fits),
    )
    cand.update(
        val_ndcg=vals,
        val_ndcg_mean=float(np.nanmean(vals)) if np.isfinite(vals).any() else None,
    )
    if cand["val_ndcg_mean"] is not None and (best is None or cand["val_ndcg_mean"] > best[0]):
        return (cand["val_ndcg_mean"], cand, fits)
    return best


def chosen(model: str, best) -> tuple[dict, list[FitResult]]:
    """The best candidate and its fits.

    Raises:
        RuntimeError: no candidate had a finite validation NDCG on any seed.
    """
    if best is None:
        raise RuntimeError(
            f"every candidate configuration of {model} diverged (NaN loss) on "
            "every seed: inspect the study's trials, or lower learning_rate"
        )
    return best[1], best[2]


def study_budget(study: optuna.Study | None) -> dict[str, Any]:
    """The trials a model's study holds; a model without a study got 0 (fixed config)."""
    trials = study.get_trials(deepcopy=False) if study else []
    states = [t.state for t in trials]
    complete, pruned = states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED)
    # what the budget cost: epochs actually trained (early stopping and pruning end trials
    # before n_epochs), failed trials included
    epochs = sum(int(t.user_attrs.get("epochs_run") or 0) for t in trials)
    return {
        "study": study.study_name if study else "",
        "n_trials_budget": study.user_attrs.get("n_trials_budget") if study else 0,
        "finished": complete + pruned,  # what sweep.n_trials counts
        "complete": complete,
        "pruned": pruned,
        "failed": states.count(TrialState.FAIL),
        "epochs_trained": epochs,
        "note": "" if study else "fixed configuration: nothing to tune, 0 trials",
    }
