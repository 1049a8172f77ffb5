"""What a sweep's workers run, and when they stop: the picklable `WorkerPlan`, the sampler seed
of each worker and the budget test shared by the coordinator (`window.py`) and the storage
workers (`runner.run_worker`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.sweep.space import SearchSpace

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker process needs; picklable, so spawned workers get it as is."""

    split: Any
    model_name: str
    fixed_params: dict[str, Any]
    space: SearchSpace
    settings: Any  # SweepSettings
    storage_url: str
    study_name: str
    k: int
    callbacks: tuple[Callable[[optuna.Study, FrozenTrial], None], ...] = ()


def with_worker_id(plan: WorkerPlan, worker_id: int) -> WorkerPlan:
    """The plan for spawned worker `worker_id`: one process, no bars (the parent has one)."""
    settings = plan.settings.replace(worker_id=worker_id, n_workers=1, quiet=True)
    return dataclasses.replace(plan, settings=settings)


def worker_seed(plan: WorkerPlan, study: optuna.Study) -> int:
    """Sampler seed: the configured seed, shifted so that no two workers and no resumed run
    replay the random draws already in the study (sampler state is not stored)."""
    seed = plan.settings.seed + len(study.get_trials(deepcopy=False))
    worker_id = plan.settings.worker_id
    if worker_id is not None:
        seed += 7919 * (worker_id + 1)
    elif plan.storage_url.startswith(("postgresql", "mysql")):
        # Separately started workers (other machines) share settings; the pid tells them apart.
        seed += 7919 * os.getpid()
    return seed % (2**32)


def budget_spent(study: optuna.Study, settings: Any, finished: int, elapsed: float) -> bool:
    """`finished` trials or `elapsed` seconds reach the budget, or the grid is exhausted."""
    if settings.n_trials is not None and finished >= settings.n_trials:
        return True
    if settings.timeout is not None and elapsed >= settings.timeout:
        return True
    sampler = study.sampler
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)
