"""The benchmark: each model's best configuration retrained over seeds and scored on test
users, with CIs, paired tests against the baseline, the trial budgets and the optimal beta
two ways. Results go to ``results/<name>/`` (layout in ``harness.benchmark.layout``).

Recipe per model:
    1. candidates: the top ``n_candidates`` complete trials of its study (a fixed config for
       a model without a study, e.g. popularity);
    2. seed-aware selection: each candidate retrained with every selection seed on the
       training users; the best mean validation NDCG wins;
    3. the winner retrained with fresh test seeds, disjoint from the selection seeds (so
       the seed luck that helped it win does not reach the test numbers), and each run
       scored on the test users once (a scoring stored in the test ledger by an earlier run
       with the same code is reused instead, see ``ledger.py``); a deterministic model is
       trained once;
    4. models with a beta only: Liang et al.'s optimal beta (anneal to cap 1.0, take the
       beta of the best validation epoch, retrain with it as the cap at the same slope,
       score on test), on the test seeds.

User-level cross-validation (``protocol.folds``) runs this recipe once per fold, on that
fold's split, and pools the folds (``harness.benchmark.folds``).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from harness.benchmark.layout import write_results
from harness.benchmark.ledger import TestLedger
from harness.benchmark.locking import results_lock, staging_folder
from harness.benchmark.parallel import PoolScheduler, fit_cost, fit_many, on_executor
from harness.benchmark.power import POWER_KEYS, stated_components
from harness.benchmark.stats import MeanCI, StatsConfigError, StatsSettings, model_interval
from harness.benchmark.summary import ModelRun, summary_tables
from harness.benchmark.training import FitResult, HeldOutTestScorer, has_beta, is_seeded
from harness.execution.progress import JobProgress
from harness.outputs import output_dir
from harness.secrets import mask_text

log = logging.getLogger("harness.benchmark")
MIN_ANNEAL_CAP = 1e-3  # a best epoch at beta ~ 0 would give cap 0, which the models reject


@dataclass
class _Jobs:
    """Where a benchmark's trainings run (None = this process) and its progress lines."""

    executor: Any = None
    progress: JobProgress | None = None

    def tick(self, label: Any) -> None:
        if self.progress is not None:
            self.progress.tick(label)


def _fit_many(
    split, model: str, jobs: list, *, patience: int | None, run: _Jobs | None = None
) -> list[FitResult]:
    """`fit_seed` for each (params, seed) job (on the run's executor when it holds this
    split), one progress line per fit."""
    run = run or _Jobs()
    results = fit_many(split, model, jobs, patience=patience, executor=run.executor)
    for (_, seed), fit in zip(jobs, results, strict=True):
        run.tick((model, f"seed {seed}:", _fit_text(fit)))
    return results


def _fit_text(fit: FitResult) -> str:
    ndcg = fit.facts.get("val_ndcg")
    ndcg_text = f"validation NDCG {ndcg:.4f}" if isinstance(ndcg, float) else "fitted"
    return f"{ndcg_text} in {fit.facts.get('wall_seconds', 0.0):.0f} s"


@dataclass(frozen=True)
class BenchmarkSettings:
    """The `benchmark.*` config keys.

    Attributes:
        name: results folder name under results_dir.
        models: models compared, in display order.
        baseline: model every other one is tested against.
        fixed_models: models compared at a fixed configuration when they have no study.
        n_seeds: seeds per final configuration. Selection uses seed, seed + 1, ...,
            seed + n_seeds - 1; the final (test) runs use the next n_seeds seeds, so the
            two sets are disjoint.
        seed: first seed.
        n_candidates: top trials per study re-run over the seeds in selection.
        patience: stop a run after this many epochs without a better validation NDCG
            (None = train all epochs; the best epoch's weights are restored either way).
        liang: run Liang et al.'s optimal-beta procedure for the models with a KL weight
            (``ModelSpec.has_beta``).
        liang_seeds: seeds of that procedure (the first ones; None = all ``n_seeds``); each
            costs two trainings.
        test_metric: per-user metric of the paired tests.
        ks: cut-offs of the test metrics.
        confidence: coverage of every interval (tests at level 1 - confidence).
        interval, test, n_resamples, stats_seed, margin: see
            ``harness.benchmark.stats.StatsSettings`` (stats_seed is its ``seed``).
        protocol_seeds: removed (it re-scored the configuration chosen on one split's
            validation users on splits where those users could be test users); must be None:
            use ``protocol.folds``.
        rescore: score the test users again even where the test ledger holds scores.
        power: the power preflight's pilot and stated variance assumption (see
            ``harness.benchmark.power``); None = no preflight values.
        save_models: keep each model's final trained model per seed under
            ``models/`` of the results folder (VAEs ``.keras``, others ``.npz``; read them
            with ``harness.models.load_model``).

    Raises:
        StatsConfigError: an unknown or contradictory option (message names it and the fix).
    """

    name: str
    models: tuple[str, ...] = ("standard_vae", "mult_vae", "ease", "popularity")
    baseline: str = "mult_vae"
    fixed_models: tuple[str, ...] = ("popularity",)
    n_seeds: int = 5
    seed: int = 0
    n_candidates: int = 3
    patience: int | None = None
    liang: bool = True
    liang_seeds: int | None = None
    test_metric: str = "ndcg@100"
    ks: tuple[int, ...] = (10, 20, 50, 100)
    confidence: float = 0.95
    interval: str = "components"
    test: str = "components"
    n_resamples: int = 2000
    stats_seed: int = 0
    margin: float = 0.01
    protocol_seeds: tuple[int, ...] | None = None
    rescore: bool = False
    save_models: bool = True
    power: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        self.stats  # validates the statistics options  # noqa: B018
        if self.power is not None:
            unknown = sorted(set(self.power) - set(POWER_KEYS))
            if unknown:
                raise StatsConfigError(
                    f"unknown benchmark.power key(s) {', '.join(unknown)}; valid keys are "
                    f"{', '.join(POWER_KEYS)}"
                )
            stated_components(self.power)  # the stated assumption is valid
        if self.baseline not in self.models:
            raise StatsConfigError(
                f"benchmark.baseline={self.baseline!r} is not among the compared models "
                f"({', '.join(self.models)}); pick one of them"
            )
        name, _, k = self.test_metric.partition("@")
        if not k.isdigit() or int(k) not in self.ks:
            raise StatsConfigError(
                f"benchmark.test_metric={self.test_metric!r} is not computed: the metrics are "
                f"<name>@k for k in benchmark.ks={list(self.ks)}; use e.g. ndcg@{max(self.ks)} "
                "or add the cut-off to benchmark.ks"
            )
        if self.n_seeds < 1:
            raise StatsConfigError(f"benchmark.n_seeds={self.n_seeds} must be >= 1")
        seeded = [m for m in self.models if is_seeded(m)]
        if self.n_seeds < 2 and seeded and self.interval != "none":
            raise StatsConfigError(
                f"benchmark.n_seeds={self.n_seeds}: {', '.join(seeded)} train with random "
                "seeds, and an interval over one seed would hide that noise; use "
                "benchmark.n_seeds >= 2, or benchmark.interval=none"
            )
        if self.liang_seeds is not None and not 1 <= self.liang_seeds <= self.n_seeds:
            raise StatsConfigError(
                f"benchmark.liang_seeds={self.liang_seeds} must lie in [1, benchmark.n_seeds="
                f"{self.n_seeds}] (or null = all seeds)"
            )
        if self.protocol_seeds is not None:
            raise StatsConfigError(
                f"benchmark.protocol_seeds={list(self.protocol_seeds)!r} was replaced by "
                "protocol.folds=K (user-level cross-validation: every fold runs its own sweep, "
                "selection and test scoring, and every user is a test user once); drop "
                "benchmark.protocol_seeds"
            )

    @property
    def stats(self) -> StatsSettings:
        """The statistics options (validated)."""
        return StatsSettings(
            confidence=self.confidence,
            interval=self.interval,
            test=self.test,
            n_resamples=self.n_resamples,
            seed=self.stats_seed,
            margin=self.margin,
        )

    @property
    def seeds(self) -> list[int]:
        """The selection seeds: every candidate configuration is trained with these."""
        return list(range(self.seed, self.seed + self.n_seeds))

    @property
    def test_seeds(self) -> list[int]:
        """The final runs' seeds, disjoint from `seeds` (they meet the test users)."""
        return list(range(self.seed + self.n_seeds, self.seed + 2 * self.n_seeds))


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


def _select(
    split,
    model: str,
    cands: list[dict],
    seeds: list[int],
    patience: int | None,
    run: _Jobs | None = None,
):
    """Retrain every candidate over ``seeds``; keep the fits of the best mean validation NDCG."""
    best: tuple[float, dict, list[FitResult]] | None = None
    for cand in cands:
        jobs = [(cand["params"], s) for s in seeds]
        fits = _fit_many(split, model, jobs, patience=patience, run=run)
        best = _rate(model, cand, fits, seeds, best)
        del fits
        gc.collect()  # drop the losing candidate's models before training the next
    return _chosen(model, best)


def _rate(model: str, cand: dict, fits: list[FitResult], seeds: list[int], best):
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


def _chosen(model: str, best) -> tuple[dict, list[FitResult]]:
    if best is None:
        raise RuntimeError(
            f"every candidate configuration of {model} diverged (NaN loss) on "
            "every seed: inspect the study's trials, or lower learning_rate"
        )
    return best[1], best[2]


def _liang(
    split,
    model: str,
    params: dict,
    seeds: list[int],
    scorer: HeldOutTestScorer,
    settings: BenchmarkSettings,
    run: _Jobs | None = None,
) -> dict[str, Any]:
    """Liang et al.'s optimal beta: anneal to 1.0, take beta at the best epoch, retrain."""
    base = _liang_base(params)
    # all probes, then all retrainings: each batch runs on the executor when there is one
    probes = _fit_many(
        split, model, [(_liang_probe(base), s) for s in seeds], patience=settings.patience, run=run
    )
    retrains = [
        _liang_retrain(base, seed, probe) for seed, probe in zip(seeds, probes, strict=True)
    ]
    del probes
    jobs = [r["job"] for r in retrains]
    finals = _fit_many(split, model, jobs, patience=settings.patience, run=run)
    return _liang_result(model, seeds, retrains, finals, scorer, settings)


def _liang_base(params: dict) -> dict:
    return {**params, "annealing": True}


def _liang_probe(base: dict) -> dict:
    """The probe's parameters: anneal to beta 1.0."""
    return {**base, "anneal_cap": 1.0}


def _liang_retrain(base: dict, seed: int, probe: FitResult) -> dict[str, Any]:
    """What a probe gives: its optimal beta, slope and history, and the retraining job."""
    beta = max(probe.facts["optimal_beta"], MIN_ANNEAL_CAP)
    # same slope as the probe: the seed formula would rescale the slope by the new cap
    steps = getattr(probe.model, "total_anneal_steps_", base.get("total_anneal_steps"))
    return {
        "beta": beta,
        "steps": steps,
        "history": {"beta": probe.history["beta"], "ndcg": probe.history["ndcg"]},
        "job": ({**base, "anneal_cap": beta, "total_anneal_steps": steps}, seed),
    }


def _liang_result(
    model: str,
    seeds: list[int],
    retrains: list[dict[str, Any]],
    finals: list[FitResult],
    scorer: HeldOutTestScorer,
    settings: BenchmarkSettings,
    evaluated: Mapping[tuple[str, int], Any] | None = None,
) -> dict[str, Any]:
    """Score the retrainings on the test users (in seed order) and summarise the procedure."""
    tests = []
    for retrain, final in zip(retrains, finals, strict=True):
        final_params, seed = retrain["job"]
        per_user, _ = scorer.score(
            final.model,
            model,
            "liang",
            seed,
            final_params,
            evaluated=(evaluated or {}).get(("liang", seed)),
        )
        log.info("%s: Liang procedure, seed %d: optimal beta %.3f", model, seed, retrain["beta"])
        tests.append(np.asarray(per_user[settings.test_metric], dtype=float))
    # the same users x seeds interval as the main table (a single seed: no interval)
    if len(tests) >= 2:
        ci = model_interval(np.vstack(tests), stochastic=True, confidence=settings.confidence)
    else:
        mean = float(np.nanmean(tests[0])) if tests else float("nan")
        ci = MeanCI(mean, float("nan"), float("nan"), len(tests), settings.confidence)
    betas = [r["beta"] for r in retrains]
    return {
        "optimal_beta": betas,
        "optimal_beta_mean": float(np.mean(betas)),
        "test": {"mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high},
        "metric": settings.test_metric,
        "total_anneal_steps": retrains[-1]["steps"] if retrains else None,
        "seed": seeds[0],
        "history": retrains[0]["history"] if retrains else None,
        "histories": [r["history"] for r in retrains],  # every seed: the report's band
    }


def _budget(study: optuna.Study | None) -> dict[str, Any]:
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


def benchmark_model(
    split,
    model: str,
    study: optuna.Study | None,
    fixed_params: dict[str, Any],
    settings: BenchmarkSettings,
    scorer: HeldOutTestScorer,
    models_dir: Path | None = None,
    run: _Jobs | None = None,
) -> ModelRun:
    """Select, retrain over seeds and test one model (steps 1-4 of the module docstring);
    with ``models_dir``, each final run's model is saved there (``info["saved_models"]``)."""
    seeded = is_seeded(model)
    seeds = settings.seeds if seeded else settings.seeds[:1]  # closed form: seeds change nothing
    cands = candidates(study, fixed_params, settings.n_candidates)
    chosen, fits = _select(split, model, cands, seeds, settings.patience, run)
    if seeded:  # fresh seeds for the runs that meet the test users
        del fits
        gc.collect()
        jobs = [(chosen["params"], s) for s in settings.test_seeds]
        fits = _fit_many(split, model, jobs, patience=settings.patience, run=run)

    def liang(params: dict, liang_seeds: list[int]) -> dict[str, Any]:
        return _liang(split, model, params, liang_seeds, scorer, settings, run)

    return _model_run(model, study, settings, scorer, models_dir, cands, chosen, fits, liang)


def _model_run(
    model: str,
    study: optuna.Study | None,
    settings: BenchmarkSettings,
    scorer: HeldOutTestScorer,
    models_dir: Path | None,
    cands: list[dict],
    chosen: dict,
    fits: list[FitResult],
    liang,
    evaluated: Mapping[tuple[str, int], Any] | None = None,
) -> ModelRun:
    """Score the chosen candidate's fits, save them, run ``liang(params, seeds)`` (VAEs, when
    asked) and gather the model's record; ``evaluated``: (variant, seed) -> test metrics
    computed on the pool (see `HeldOutTestScorer.score`)."""
    seeded = is_seeded(model)
    seeds = settings.test_seeds if seeded else settings.seeds[:1]
    run = _scored_run(model, fits, chosen["params"], scorer, seeded, evaluated)
    per_user, coverage, facts = run.per_user, run.scalars["coverage@100"], run.seeds
    info: dict[str, Any] = {
        "budget": _budget(study),
        "chosen_trial": chosen["trial"],
        "params": chosen["params"],
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
        info["saved_models"] = save_final_models(models_dir, model, fits, seeded)
    if has_beta(model):
        params = chosen["params"]
        param = "anneal_cap" if params.get("annealing") else "beta"
        search = {
            "param": param,
            "value": params.get(param),
            "metric": settings.test_metric,
            "test_mean": float(np.mean(np.nanmean(per_user[settings.test_metric], axis=1))),
            "optimal_beta_final": [f["optimal_beta"] for f in facts],
        }
        liang_seeds = seeds[: settings.liang_seeds or len(seeds)]
        info["beta"] = {
            "search": search,
            "liang": liang(params, liang_seeds) if settings.liang else None,
        }
    del fits
    gc.collect()
    return ModelRun(model, per_user, {"coverage@100": coverage}, facts, info)


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


@dataclass
class _Pooled:
    """A seeded model's benchmark on the pool: what `_pooled_models` fills in."""

    model: str
    study: optuna.Study | None
    cands: list[dict]
    fits: dict[tuple[int, int], FitResult]  # (candidate, seed index) -> fit
    cost: float
    chosen: dict | None = None
    chosen_fits: list[FitResult] | None = None
    retrains: dict[int, dict[str, Any]] | None = None  # Liang seed index -> `_liang_retrain`
    finals: dict[int, FitResult] | None = None  # Liang seed index -> retraining
    tests: dict[int, FitResult] | None = None  # test seed index -> the chosen config's run
    evaluated: dict[tuple[str, int], Any] | None = None  # (variant, seed) -> test metrics

    def run(self, settings, scorer, models_dir) -> ModelRun:
        """The model's record, scoring in the same order as `benchmark_model`."""
        assert self.chosen is not None and self.chosen_fits is not None

        def liang(params: dict, liang_seeds: list[int]) -> dict[str, Any]:
            assert self.retrains is not None and self.finals is not None
            order = range(len(liang_seeds))
            retrains = [self.retrains[i] for i in order]
            finals = [self.finals[i] for i in order]
            return _liang_result(
                self.model, liang_seeds, retrains, finals, scorer, settings, self.evaluated
            )

        fits, self.chosen_fits = self.chosen_fits, None
        return _model_run(
            self.model,
            self.study,
            settings,
            scorer,
            models_dir,
            self.cands,
            self.chosen,
            fits,
            liang,
            self.evaluated,
        )


def _pooled_models(
    executor,
    split,
    studies: Mapping[str, optuna.Study | None],
    model_params: Mapping[str, dict[str, Any]],
    settings: BenchmarkSettings,
    scorer: HeldOutTestScorer,
    run: _Jobs | None = None,
) -> dict[str, _Pooled]:
    """Every seeded model's selection fits, Liang probes and retrainings and test scorings,
    as one graph on the pool (no barrier between models or steps): a model's probes start
    when its candidates are all fitted, each retraining when its probe is, each scoring when
    its fit is. Decisions use all of a step's results in a fixed order, and scorings are
    handed to the scorer later in model order (`_Pooled.run`), so nothing depends on timing.
    """
    scheduler = PoolScheduler(executor)
    run = run or _Jobs()
    seeds, test_seeds = settings.seeds, settings.test_seeds
    liang_seeds = test_seeds[: settings.liang_seeds or len(seeds)] if settings.liang else []
    chain = 3 if liang_seeds else 2  # fits on the path from a candidate fit to the end
    out: dict[str, _Pooled] = {}

    def tick(label: Any, fit: FitResult) -> None:
        run.tick((*label, ":", _fit_text(fit)))

    def evaluate(st: _Pooled, variant: str, seed: int, fit: FitResult, params: dict) -> None:
        if scorer.needs_scoring(st.model, variant, seed, params):

            def keep(result: Any) -> None:
                assert st.evaluated is not None
                st.evaluated[(variant, seed)] = result

            label = (st.model, f"score {variant}", seed)
            scheduler.evaluate(fit.model, scorer, keep, label=label)

    def candidate_done(st: _Pooled, key: tuple[int, int], fit: FitResult) -> None:
        i, j = key
        tick((st.model, f"trial {st.cands[i]['trial']}", f"seed {seeds[j]}"), fit)
        st.fits[key] = fit
        if len(st.fits) < len(st.cands) * len(seeds):
            return
        best = None
        for i, cand in enumerate(st.cands):
            best = _rate(st.model, cand, [st.fits[(i, j)] for j in range(len(seeds))], seeds, best)
        st.fits.clear()  # every selection fit goes: the test runs use fresh seeds
        st.chosen, _ = _chosen(st.model, best)
        params = st.chosen["params"]
        for j, seed in enumerate(test_seeds):
            then = partial(final_done, st, j, seed, params)
            queue(st, params, seed, then, st.cost, "test run")
        base = _liang_base(params)
        for i, seed in enumerate(liang_seeds if has_beta(st.model) else []):
            then = partial(probe_done, st, base, i, seed)
            queue(st, _liang_probe(base), seed, then, 2 * st.cost, "Liang probe")

    def queue(st: _Pooled, params: dict, seed: int, then, priority: float, what: str) -> None:
        """Queue one training of ``st.model`` on the pool; ``then`` gets its FitResult."""
        label = (st.model, what, seed)
        scheduler.fit(
            split, st.model, params, seed, then, patience=settings.patience, priority=priority,
            label=label,
        )  # fmt: skip

    def final_done(st: _Pooled, j: int, seed: int, params: dict, fit: FitResult) -> None:
        tick((st.model, "test run", f"seed {seed}"), fit)
        assert st.tests is not None
        st.tests[j] = fit
        evaluate(st, "final", seed, fit, params)
        if len(st.tests) == len(test_seeds):
            st.chosen_fits = [st.tests[i] for i in range(len(test_seeds))]
            st.tests = None

    def probe_done(st: _Pooled, base: dict, i: int, seed: int, probe: FitResult) -> None:
        tick((st.model, "Liang probe", f"seed {seed}"), probe)
        assert st.retrains is not None
        retrain = st.retrains[i] = _liang_retrain(base, seed, probe)
        params, _ = retrain["job"]
        then = partial(retrain_done, st, i, seed, params)
        queue(st, params, seed, then, st.cost, "Liang retraining")

    def retrain_done(st: _Pooled, i: int, seed: int, params: dict, fit: FitResult) -> None:
        tick((st.model, "Liang retraining", f"seed {seed}"), fit)
        assert st.finals is not None
        st.finals[i] = fit
        evaluate(st, "liang", seed, fit, params)

    n_users, n_items = split.n_train_users, split.n_items
    for model in settings.models:
        if not is_seeded(model):
            continue
        study = studies.get(model)
        cands = candidates(study, dict(model_params.get(model, {})), settings.n_candidates)
        cost = max(fit_cost(c["params"], n_users, n_items) for c in cands)
        st = out[model] = _Pooled(model, study, cands, {}, cost, retrains={}, finals={}, tests={})
        st.evaluated = {}
        for i, cand in enumerate(cands):
            for j, seed in enumerate(seeds):
                own = fit_cost(cand["params"], n_users, n_items)
                scheduler.fit(
                    split,
                    model,
                    cand["params"],
                    seed,
                    partial(candidate_done, st, (i, j)),
                    patience=settings.patience,
                    priority=own + (chain - 1) * cost,
                    label=(model, f"trial {cand['trial']}", seed),
                )
    scheduler.run()
    return out


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
    seeds, trained once, as ``<model><suffix>``; the suffix is the spec's first format); returns the paths relative to the results folder."""
    models_dir.mkdir(parents=True, exist_ok=True)
    from harness.models.registry import model_spec

    suffix = model_spec(model).formats[0]
    saved = []
    for fit in fits:
        name = f"{model}-seed{fit.facts['seed']}{suffix}" if seeded else f"{model}{suffix}"
        fit.model.save(models_dir / name)
        saved.append(f"{models_dir.name}/{name}")
    return saved


def _models_staging(results_dir: Path, settings: BenchmarkSettings) -> Path | None:
    """An empty folder beside the results folder where the final models are saved until
    ``write_results`` moves it in (a stale one from a crashed run is removed first)."""
    if not settings.save_models:
        return None
    staging = staging_folder(results_dir, settings.name)
    shutil.rmtree(staging, ignore_errors=True)
    return staging / "models"


def run_benchmark(**kwargs: Any) -> Path:
    """Benchmark every model of ``settings.models`` and write ``results_dir/<name>/``.

    Holds the results folder's benchmark lock (a second benchmark there waits), and removes
    the models' staging folder when it fails (a full disk must not stay full). Arguments and
    errors: see `_run_benchmark`.
    """
    results_dir = Path(kwargs["results_dir"])
    with results_lock(results_dir):
        try:
            return _run_benchmark(**kwargs)
        except BaseException:
            shutil.rmtree(staging_folder(results_dir, kwargs["settings"].name), True)
            raise


def _run_benchmark(
    *,
    split,
    dataset_name: str,
    studies: Mapping[str, optuna.Study | None],
    model_params: Mapping[str, dict[str, Any]],
    settings: BenchmarkSettings,
    results_dir: Path,
    storage: str | None = None,
    fold: int | None = None,
    executor: Any = None,
) -> Path:
    """Benchmark every model of ``settings.models`` and write ``results_dir/<name>/``.

    Args:
        split: the data split (the studies' ``split_fingerprint`` must match it).
        dataset_name: dataset name, recorded.
        studies: model -> its study (None for a fixed-configuration model).
        model_params: model -> fixed parameters (used without a study, and as fallback).
        settings: benchmark settings.
        results_dir: parent folder of the benchmark folder.
        storage: storage URL, recorded.
        fold: with user-level cross-validation, which fold ``split`` is (recorded).
        executor: where the seeded models' trainings and scorings run, as one job graph
            (`harness.execution`, made with ``split``); None = in this process.

    Returns:
        The benchmark folder.

    Raises:
        ValueError: a study was made on another split than ``split``.
        StatsConfigError: a stochastic model ended with fewer than 2 seed runs.
    """
    start = time.perf_counter()
    output_dir(results_dir, settings.name, "benchmark.name")  # a bad name fails before training
    for model, study in studies.items():
        fp = study.user_attrs.get("split_fingerprint") if study else None
        if fp and fp != split.fingerprint:
            raise ValueError(
                f"study {study.study_name!r} ({model}) was swept on split {fp[:12]} "
                f"but the benchmark split is {split.fingerprint[:12]}: benchmark "
                "with the dataset/protocol the sweep used"
            )
    ledger = TestLedger(results_dir, rescore=settings.rescore)
    scorer = HeldOutTestScorer(split, settings.ks, ledger=ledger)
    models_dir = _models_staging(results_dir, settings)  # None when not saving models
    progress = JobProgress(
        planned_runs(studies, model_params, settings), f"benchmark {settings.name}", logger=log
    )
    jobs = _Jobs(executor if on_executor(executor, split) else None, progress)
    where = jobs.executor.describe() if jobs.executor is not None else "this process"
    progress.start(f"{where} ({', '.join(settings.models)}; {settings.n_seeds} seed(s))")
    pooled: dict[str, _Pooled] = {}
    if jobs.executor is not None:  # the VAEs' trainings and scorings as one job graph
        pooled = _pooled_models(jobs.executor, split, studies, model_params, settings, scorer, jobs)
    runs = []
    for m in settings.models:
        if m in pooled:
            runs.append(pooled.pop(m).run(settings, scorer, models_dir))
            continue
        params = dict(model_params.get(m, {}))
        runs.append(
            benchmark_model(split, m, studies.get(m), params, settings, scorer, models_dir, jobs)
        )
    info = {
        "name": settings.name,
        "dataset": dataset_name,
        "split_fingerprint": split.fingerprint,
        "n_test_users": int(split.test_te.shape[0]),
        "n_items": int(split.n_items),
        "seeds": settings.seeds,
        "n_seeds": settings.n_seeds,
        "baseline": settings.baseline,
        "test_metric": settings.test_metric,
        "storage": mask_text(storage) if storage else storage,  # password masked
        "test_scorings": scorer.record(),
        "test_scored_once": max(scorer.scored.values(), default=0) <= 1,
        "test_ledger": scorer.ledger_record(),
        "fold": fold,
        "folds": split.params.get("folds"),
        "test_seeds": settings.test_seeds,
        "test_exposure": ledger.exposure(split.fingerprint),
        "code_fingerprint": ledger.code,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(settings).items()},
        "models": {r.model: r.info for r in runs},
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    tables = summary_tables(
        runs,
        baseline=settings.baseline,
        test_metric=settings.test_metric,
        stats=settings.stats,
    )
    per_user = {r.model: {**r.per_user, "test_users": np.asarray(split.test_users)} for r in runs}
    folders = {"models": models_dir} if models_dir is not None else None
    target = output_dir(results_dir, settings.name, "benchmark.name")
    written = write_results(target, info, tables, per_user, folders)
    if models_dir is not None:
        shutil.rmtree(models_dir.parent, ignore_errors=True)  # the emptied staging folder
    return written
