"""The Optuna objective: train one configuration, report NDCG@k per epoch, record the trial.

The split is loaded once outside and bound with `functools.partial` (see runner.py); here we
only suggest, build, fit and record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import optuna
from tqdm.auto import tqdm

from harness.devices import free_model_memory
from harness.sweep.records import EpochLog, jsonable, record_trial
from harness.sweep.space import SearchSpace, suggest

INTERRUPTED = "interrupted (KeyboardInterrupt); rerun the command to resume"
LOST = "worker lost"  # prefix of the reason of a trial whose worker died, hung or was cancelled
STOPPED = "stopped"  # prefix of the reason of a trial stopped by its environment (full disk)


def trial_seed(sweep_seed: int, trial_number: int) -> int:
    """The training seed of trial `trial_number` of a sweep seeded with `sweep_seed`.

    Derived with numpy's SeedSequence (not `sweep_seed + n`), so neighbouring sweep seeds
    don't share trial seeds; stable across machines and numpy versions.
    """
    import numpy as np

    return int(np.random.SeedSequence([sweep_seed, trial_number]).generate_state(1)[0] >> 1)


class TrialFailedError(RuntimeError):
    """A trial produced no usable value (e.g. no finite NDCG); recorded as FAIL, sweep goes on."""


def objective(
    trial: optuna.Trial,
    split: Any,
    model_name: str,
    fixed_params: Mapping[str, Any],
    space: SearchSpace,
    *,
    progress: bool = False,
    sweep_seed: int | None = None,
) -> float:
    """Train the trial's configuration and return its best validation NDCG@k over epochs.

    Every epoch's NDCG goes to `trial.report(ndcg, epoch)`; when the pruner says so, the trial
    records what it has and raises `optuna.TrialPruned`. Records (user attrs) are written on
    every outcome: complete, pruned and failed.

    Args:
        trial: Optuna trial (or FixedTrial in tests).
        split: A `harness.data.Split`.
        model_name: Name for `harness.models.build_model`.
        fixed_params: Model params not searched (model config + fixed search-space values).
        space: Parsed search space; its parameters override `fixed_params`.
        progress: Show a per-epoch progress bar.
        sweep_seed: The sweep's seed; a trial of a seeded model whose `seed` is not fixed
            trains with `trial_seed(sweep_seed, trial.number)`, so the same command gives the
            same trial values. None = leave `seed` as configured (None: nondeterministic).

    Returns:
        Best validation NDCG@k over the epochs run.

    Raises:
        optuna.TrialPruned: The pruner stopped the trial.
        harness.models.TrainingDivergedError: Loss became NaN/inf (failure_reason recorded).
        TrialFailedError: Training ended without one finite NDCG (failure_reason recorded).
    """
    from harness.models import TrainingDivergedError, build_model, model_param_names, model_spec

    params = dict(fixed_params)
    if "verbose" in model_param_names(model_name):
        params.setdefault("verbose", 0)  # Keras' own progress lines would garble our bars
    for name, distribution in space.distributions.items():
        params[name] = suggest(trial, name, distribution)
    if sweep_seed is not None and "seed" in model_param_names(model_name):
        if params.get("seed") is None:  # an explicit model.seed wins
            params["seed"] = trial_seed(sweep_seed, trial.number)
    trial.set_user_attr("split_fingerprint", split.fingerprint)
    trial.set_user_attr("params_full", jsonable(params))

    epochs = EpochLog()
    total = params.get("n_epochs") if model_spec(model_name).iterative else 1
    bar = tqdm(
        total=total,
        desc=f"trial {trial.number}",
        unit="epoch",
        leave=False,
        disable=None if progress else True,  # None: no bar when stderr is not a terminal
    )

    def on_epoch(epoch: int, logs: dict[str, Any]) -> None:
        ndcg = epochs.add(logs)
        bar.update(1)
        bar.set_postfix(ndcg=f"{ndcg:.4f}")
        if ndcg == ndcg:  # Optuna's pruners compare values: a NaN report would poison them
            trial.report(ndcg, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (NDCG {ndcg:.4f})")

    start = time.perf_counter()
    try:
        model = build_model(model_name, split.n_train_users, split.n_items, **params)
        model.fit(
            split.train,
            x_val_tr=split.val_tr,
            x_val_te=split.val_te,
            epoch_callback=on_epoch,
        )
    except optuna.TrialPruned:
        record_trial(trial, epochs, wall_seconds=time.perf_counter() - start)
        raise
    except TrainingDivergedError as error:
        reason = f"TrainingDivergedError: {error}"
        record_trial(trial, epochs, wall_seconds=time.perf_counter() - start, failure_reason=reason)
        raise
    except (Exception, KeyboardInterrupt) as error:
        # Not caught by the sweep (Ctrl-C or a bug should stop it); the record says why.
        if isinstance(error, KeyboardInterrupt):
            reason = INTERRUPTED
        else:
            reason = f"{type(error).__name__}: {error}"
        record_trial(trial, epochs, wall_seconds=time.perf_counter() - start, failure_reason=reason)
        raise
    finally:
        bar.close()
        free_model_memory()  # Keras state and traced gradients: flat memory over trials
    best = epochs.best_ndcg
    if best != best:
        reason = f"no finite validation NDCG in {epochs.epochs_run} epoch(s)"
        record_trial(trial, epochs, wall_seconds=time.perf_counter() - start, failure_reason=reason)
        raise TrialFailedError(reason)
    record_trial(trial, epochs, wall_seconds=time.perf_counter() - start)
    return best
