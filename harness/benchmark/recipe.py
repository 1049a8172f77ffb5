"""The benchmark's recipe as one job graph: per model, its candidates' fits over the selection
seeds (``harness.benchmark.selection``), then the chosen configuration's test runs on fresh
seeds and Liang's probes and retrainings (``harness.benchmark.liang``), and the test-user
scoring of every final run; then the model's record (``ModelJobs.record``).

A graph runs on one executor: the run's worker executor for all seeded models at once (no
barrier between models or steps: a model's probes start when its candidates are all fitted,
each retraining when its probe is, each scoring when its fit is), or a `SerialExecutor` for
one model in this process (no worker executor, or a closed-form model). Decisions use all of
a step's results in a fixed order, and scorings reach the scorer in model order in `record`,
so results never depend on timing or on where a job ran.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from harness.benchmark.liang import liang_base, liang_probe, liang_result, liang_retrain
from harness.benchmark.parallel import PoolScheduler, fit_cost
from harness.benchmark.selection import Selection, candidates, chosen, study_budget
from harness.benchmark.serial import SerialExecutor
from harness.benchmark.settings import BenchmarkSettings
from harness.benchmark.summary import ModelRun
from harness.benchmark.training import FitResult, HeldOutTestScorer, has_beta, is_seeded
from harness.execution.progress import JobProgress


def final_seeds(settings: BenchmarkSettings, seeded: bool) -> list[int]:
    """The seeds of the runs that meet the test users: fresh ones for a seeded model; a
    closed-form model's one selection run (its seed changes nothing)."""
    return settings.test_seeds if seeded else settings.seeds[:1]


@dataclass
class ModelJobs:
    """One model's part of the graph: what its jobs gave, and its record (`record`).

    Attributes:
        selection: its candidates' choice; for a closed-form model also the final run.
        tests: final seed index -> the chosen configuration's test run (seeded models).
        retrains: Liang seed index -> what its probe gave (`liang_retrain`).
        finals: Liang seed index -> the retraining.
        evaluated: (variant, seed) -> test metrics computed by a job (see
            `HeldOutTestScorer.score`); absent when the test ledger holds the scores.
    """

    model: str
    study: optuna.Study | None
    seeded: bool
    selection: Selection
    cost: float
    liang_seeds: list[int]
    tests: dict[int, FitResult] = field(default_factory=dict)
    retrains: dict[int, dict[str, Any]] = field(default_factory=dict)
    finals: dict[int, FitResult] = field(default_factory=dict)
    evaluated: dict[tuple[str, int], Any] = field(default_factory=dict)

    def record(
        self, settings: BenchmarkSettings, scorer: HeldOutTestScorer, models_dir: Path | None
    ) -> ModelRun:
        """Score the final runs (then Liang's retrainings) on the test users, save the final
        models in ``models_dir`` (``info["saved_models"]``) and gather the model's record.
        The jobs' fits are released."""
        cands, choice = self.selection.cands, self.selection.chosen
        assert choice is not None, f"{self.model}: the graph did not finish"
        if self.seeded:
            fits = [self.tests.pop(i) for i in range(len(settings.test_seeds))]
        else:
            fits, self.selection.chosen_fits = self.selection.chosen_fits or [], None
        seeded, seeds = self.seeded, final_seeds(settings, self.seeded)
        run = _scored_run(self.model, fits, choice["params"], scorer, seeded, self.evaluated)
        per_user, coverage, facts = run.per_user, run.scalars["coverage@100"], run.seeds
        info: dict[str, Any] = {
            "budget": study_budget(self.study),
            "chosen_trial": choice["trial"],
            "params": choice["params"],
            "deterministic": not seeded,
            "selection_seeds": settings.seeds if seeded else settings.seeds[:1],
            "test_seeds": seeds,
            "candidates": [
                {
                    **{k: v for k, v in c.items() if k != "params"},
                    "lr_schedule": c["params"].get("lr_schedule"),
                }
                for c in cands
            ],  # fmt: skip
        }
        if models_dir is not None:
            info["saved_models"] = save_final_models(models_dir, self.model, fits, seeded)
        if has_beta(self.model):
            params = choice["params"]
            param = "anneal_cap" if params.get("annealing") else "beta"
            search = {
                "param": param,
                "value": params.get(param),
                "metric": settings.test_metric,
                "test_mean": float(np.mean(np.nanmean(per_user[settings.test_metric], axis=1))),
                "optimal_beta_final": [f["optimal_beta"] for f in facts],
            }
            info["beta"] = {
                "search": search,
                "liang": self._liang(settings, scorer) if settings.liang else None,
            }
        del fits
        gc.collect()
        return ModelRun(self.model, per_user, {"coverage@100": coverage}, facts, info)

    def _liang(self, settings: BenchmarkSettings, scorer: HeldOutTestScorer) -> dict[str, Any]:
        order = range(len(self.liang_seeds))
        retrains = [self.retrains.pop(i) for i in order]
        finals = [self.finals.pop(i) for i in order]
        return liang_result(
            self.model, self.liang_seeds, retrains, finals, scorer, settings, self.evaluated
        )


def _scored_run(
    model: str,
    fits: list[FitResult],
    params: dict,
    scorer: HeldOutTestScorer,
    seeded: bool,
    evaluated: Mapping[tuple[str, int], Any] | None = None,
) -> ModelRun:
    """Score each fit on the test users; a deterministic model's one run stays one row."""
    evaluated = evaluated or {}
    scored = [
        scorer.score(
            f.model,
            model,
            "final",
            f.facts["seed"],
            params,
            evaluated=evaluated.get(("final", f.facts["seed"])),
        )
        for f in fits
    ]
    per_user = {m: np.stack([s[0][m] for s in scored]) for m in scored[0][0]}
    facts = [f.facts for f in fits]
    if not seeded:
        facts = [{**facts[0], "note": "deterministic: trained once"}]
    info = {"deterministic": not seeded}
    return ModelRun(model, per_user, {"coverage@100": [s[1] for s in scored]}, facts, info)


def fit_text(fit: FitResult) -> str:
    """A fit's progress-line text: its validation NDCG and training time."""
    ndcg = fit.facts.get("val_ndcg")
    ndcg_text = f"validation NDCG {ndcg:.4f}" if isinstance(ndcg, float) else "fitted"
    return f"{ndcg_text} in {fit.facts.get('wall_seconds', 0.0):.0f} s"


def run_recipe(
    executor: Any,
    split,
    models: list[str],
    studies: Mapping[str, optuna.Study | None],
    model_params: Mapping[str, dict[str, Any]],
    settings: BenchmarkSettings,
    scorer: HeldOutTestScorer,
    progress: JobProgress | None = None,
) -> dict[str, ModelJobs]:
    """Every job of ``models`` (selection fits, test runs, Liang's probes and retrainings,
    test scorings) as one graph on ``executor`` (see the module docstring); one progress
    line per fit. Returns model -> its `ModelJobs`, ready for `ModelJobs.record`.

    Raises:
        RuntimeError: every candidate of a model diverged (or it has none).
        WorkerError: a job failed in a worker (a `SerialExecutor` job: its own exception).
    """
    scheduler = PoolScheduler(executor)
    seeds, test_seeds = settings.seeds, settings.test_seeds
    liang_on = test_seeds[: settings.liang_seeds or len(seeds)] if settings.liang else []
    chain = 3 if liang_on else 2  # fits on the path from a candidate fit to the end
    out: dict[str, ModelJobs] = {}

    def tick(label: Any, fit: FitResult) -> None:
        if progress is not None:
            progress.tick((*label, ":", fit_text(fit)))

    def evaluate(st: ModelJobs, variant: str, seed: int, fit: FitResult, params: dict) -> None:
        if scorer.needs_scoring(st.model, variant, seed, params):
            keep = partial(st.evaluated.__setitem__, (variant, seed))
            label = (st.model, f"score {variant}", seed)
            scheduler.evaluate(fit.model, scorer, keep, label=label)

    def queue(st: ModelJobs, params: dict, seed: int, then, priority: float, what: str) -> None:
        """Queue one training of ``st.model``; ``then`` gets its FitResult."""
        label = (st.model, what, seed)
        scheduler.fit(
            split, st.model, params, seed, then, patience=settings.patience, priority=priority,
            label=label,
        )  # fmt: skip

    def candidate_done(st: ModelJobs, i: int, j: int, fit: FitResult) -> None:
        trial = st.selection.cands[i]["trial"]
        tick((st.model, f"trial {trial}", f"seed {st.selection.seeds[j]}"), fit)
        if not st.selection.add(i, j, fit):
            return
        assert st.selection.chosen is not None
        params = st.selection.chosen["params"]
        if st.seeded:  # fresh seeds for the runs that meet the test users
            for j, seed in enumerate(test_seeds):
                then = partial(final_done, st, j, seed, params)
                queue(st, params, seed, then, st.cost, "test run")
        else:  # trained once: the selection run is the final run
            for final in st.selection.chosen_fits or []:
                evaluate(st, "final", final.facts["seed"], final, params)
        base = liang_base(params)
        for i, seed in enumerate(st.liang_seeds):
            then = partial(probe_done, st, base, i, seed)
            queue(st, liang_probe(base), seed, then, 2 * st.cost, "Liang probe")

    def final_done(st: ModelJobs, j: int, seed: int, params: dict, fit: FitResult) -> None:
        tick((st.model, "test run", f"seed {seed}"), fit)
        st.tests[j] = fit
        evaluate(st, "final", seed, fit, params)

    def probe_done(st: ModelJobs, base: dict, i: int, seed: int, probe: FitResult) -> None:
        tick((st.model, "Liang probe", f"seed {seed}"), probe)
        retrain = st.retrains[i] = liang_retrain(base, seed, probe)
        params, _ = retrain["job"]
        then = partial(retrain_done, st, i, seed, params)
        queue(st, params, seed, then, st.cost, "Liang retraining")

    def retrain_done(st: ModelJobs, i: int, seed: int, params: dict, fit: FitResult) -> None:
        tick((st.model, "Liang retraining", f"seed {seed}"), fit)
        st.finals[i] = fit
        evaluate(st, "liang", seed, fit, params)

    n_users, n_items = split.n_train_users, split.n_items
    for model in models:
        seeded = is_seeded(model)
        study = studies.get(model)
        cands = candidates(study, dict(model_params.get(model, {})), settings.n_candidates)
        if not cands:
            chosen(model, None)  # raises: nothing to choose from
        model_seeds = seeds if seeded else seeds[:1]  # closed form: seeds change nothing
        finals = final_seeds(settings, seeded)
        liang_seeds = finals[: settings.liang_seeds or len(finals)]
        st = out[model] = ModelJobs(
            model=model,
            study=study,
            seeded=seeded,
            selection=Selection(model, cands, model_seeds, keep_models=not seeded),
            cost=max(fit_cost(c["params"], n_users, n_items) for c in cands),
            liang_seeds=liang_seeds if settings.liang and has_beta(model) else [],
        )
        for i, cand in enumerate(cands):
            own = fit_cost(cand["params"], n_users, n_items)
            for j, seed in enumerate(model_seeds):
                scheduler.fit(
                    split,
                    model,
                    cand["params"],
                    seed,
                    partial(candidate_done, st, i, j),
                    patience=settings.patience,
                    priority=own + (chain - 1) * st.cost,
                    label=(model, f"trial {cand['trial']}", seed),
                )
    scheduler.run()
    return out


def benchmark_model(
    split,
    model: str,
    study: optuna.Study | None,
    fixed_params: dict[str, Any],
    settings: BenchmarkSettings,
    scorer: HeldOutTestScorer,
    models_dir: Path | None = None,
    progress: JobProgress | None = None,
) -> ModelRun:
    """Select, retrain over seeds and test one model in this process (the recipe on a
    `SerialExecutor`); with ``models_dir``, each final run's model is saved there."""
    graph = run_recipe(
        SerialExecutor(),
        split,
        [model],
        {model: study},
        {model: fixed_params},
        settings,
        scorer,
        progress,
    )
    return graph[model].record(settings, scorer, models_dir)


def planned_runs(
    studies: Mapping[str, optuna.Study | None],
    model_params: Mapping[str, dict[str, Any]],
    settings: BenchmarkSettings,
) -> int:
    """How many trainings `run_benchmark` will do (selection over seeds + Liang's pairs)."""
    total = 0
    for model in settings.models:
        seeded = is_seeded(model)
        seeds = settings.seeds if seeded else settings.seeds[:1]
        cands = candidates(
            studies.get(model), dict(model_params.get(model, {})), settings.n_candidates
        )
        total += len(cands) * len(seeds) + (len(settings.test_seeds) if seeded else 0)
        if has_beta(model) and settings.liang:
            total += 2 * len(seeds[: settings.liang_seeds or len(seeds)])
    return total


def save_final_models(models_dir: Path, model: str, fits: list[FitResult], seeded: bool):
    """Save each fit's model as ``models_dir/<model>-seed<seed><suffix>`` (a model without
    seeds, trained once, as ``<model><suffix>``; the suffix is the spec's first format);
    returns the paths relative to the results folder."""
    models_dir.mkdir(parents=True, exist_ok=True)
    from harness.models.registry import model_spec

    suffix = model_spec(model).formats[0]
    saved = []
    for fit in fits:
        name = f"{model}-seed{fit.facts['seed']}{suffix}" if seeded else f"{model}{suffix}"
        fit.model.save(models_dir / name)
        saved.append(f"{models_dir.name}/{name}")
    return saved
