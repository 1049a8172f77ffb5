"""Studies: sampler and pruner factories, and creating, resuming and loading a study.

A study is one model's trials on one split (`study_name_for`); where it is stored and how the
storage is opened is `harness.sweep.storage`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.storages import BaseStorage

from harness.errors import UserError
from harness.sweep.identity import identity_mismatch
from harness.sweep.settings import SweepConfigError, SweepSettings
from harness.sweep.space import SearchSpace, grid_values
from harness.sweep.storage import open_storage


class StudyNotFoundError(UserError, LookupError):
    """The requested study is not in the storage."""


def study_name_for(dataset_name: str, fingerprint: str, model_name: str) -> str:
    """Derived study name: trials of different data, protocols or models never mix."""
    return f"{dataset_name}-{fingerprint[:12]}-{model_name}"


def make_sampler(
    settings: SweepSettings, space: SearchSpace, *, seed: int | None = None
) -> optuna.samplers.BaseSampler:
    """The configured sampler. Its state is not stored in the study (Optuna keeps only trials).

    Args:
        settings: Sweep settings (`sampler`, `seed`, `n_startup_trials`).
        space: Parsed search space (the grid sampler needs it up front).
        seed: Overrides `settings.seed` (workers and resumed runs use derived seeds).
    """
    seed = settings.seed if seed is None else seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "tpe":
            # constant_liar keeps parallel workers from proposing the same point.
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                constant_liar=True,
                n_startup_trials=settings.n_startup_trials,
            )
        if settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if settings.sampler == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
        if settings.sampler == "grid":
            grid = {
                name: grid_values(f"search_space.{name}", dist)
                for name, dist in space.distributions.items()
            }
            return optuna.samplers.GridSampler(grid, seed=seed)
    raise SweepConfigError(f"sweep.sampler={settings.sampler!r} is not supported.")


def make_pruner(settings: SweepSettings) -> optuna.pruners.BasePruner:
    """The configured pruner; it sees one validation NDCG@k per epoch (step = epoch)."""
    warmup = max(settings.n_warmup_epochs, 0)
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.n_startup_trials, n_warmup_steps=warmup
        )
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(warmup, 1), reduction_factor=3)
    if settings.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(warmup, 1), reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def create_or_load_study(
    storage: BaseStorage,
    study_name: str,
    *,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    attrs: Mapping[str, Any],
) -> optuna.Study:
    """Create the study, or load it to resume; check it holds compatible trials.

    Args:
        attrs: Study user attrs (model, dataset, split_fingerprint, k, n_trials_budget, config,
            identity); written on every run, so they describe the latest invocation.

    Raises:
        SweepConfigError: The existing study was made for another model or split (only possible
            with an explicit sweep.study_name), or for another configuration (its "identity",
            `harness.sweep.identity`): the message lists the differing keys.
    """
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )
    for key in ("model", "split_fingerprint"):
        old = study.user_attrs.get(key)
        if old is not None and old != attrs.get(key):
            raise SweepConfigError(
                f"study {study_name!r} holds trials for {key}={old!r} but this run has "
                f"{attrs.get(key)!r}; set another sweep.study_name (or leave it null to derive one)."
            )
    if "identity" in attrs:
        error = identity_mismatch(study_name, study.user_attrs.get("identity"), attrs["identity"])
        if error is not None:
            raise error
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study


def load_study(storage: str | BaseStorage, study_name: str) -> optuna.Study:
    """Load an existing study for reading (no heartbeat, no sampler state).

    Raises:
        StudyNotFoundError: Listing the study names the storage does hold.
    """
    if isinstance(storage, str):
        storage = open_storage(storage, read_only=True)
    names = optuna.study.get_all_study_names(storage)
    if study_name not in names:
        raise StudyNotFoundError(
            f"no study {study_name!r} in the storage; it holds: {', '.join(names) or 'nothing'}. "
            "Run harness-sweep first, or pass the name of one of those studies."
        )
    return optuna.load_study(study_name=study_name, storage=storage)
