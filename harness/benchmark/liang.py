"""Liang et al.'s optimal-beta procedure, for models with a KL weight: a probe anneals beta
to 1.0, the beta of its best validation epoch is the optimal beta, and a retraining with that
beta as the annealing cap (at the probe's slope) is scored on the test users, per seed.

The trainings themselves are jobs of the benchmark's recipe (``harness.benchmark.recipe``);
this module holds their parameters and the summary of their results.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.benchmark.settings import BenchmarkSettings
from harness.benchmark.stats import MeanCI, model_interval
from harness.benchmark.training import FitResult, HeldOutTestScorer

log = logging.getLogger("harness.benchmark")
MIN_ANNEAL_CAP = 1e-3  # a best epoch at beta ~ 0 would give cap 0, which the models reject


def liang_base(params: dict) -> dict:
    """The chosen configuration with annealing on (probe and retraining both anneal)."""
    return {**params, "annealing": True}


def liang_probe(base: dict) -> dict:
    """The probe's parameters: anneal to beta 1.0."""
    return {**base, "anneal_cap": 1.0}


def liang_retrain(base: dict, seed: int, probe: FitResult) -> dict[str, Any]:
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


def liang_result(
    model: str,
    seeds: list[int],
    retrains: list[dict[str, Any]],
    finals: list[FitResult],
    scorer: HeldOutTestScorer,
    settings: BenchmarkSettings,
    evaluated: Mapping[tuple[str, int], Any] | None = None,
) -> dict[str, Any]:
    """Score the retrainings on the test users (in seed order) and summarise the procedure;
    ``evaluated``: (variant, seed) -> test metrics already computed by a job."""
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
