"""Composed config -> sweep arguments, and the sweep stage on typed settings.

`sweep_models` sweeps models given as typed parts (`ModelConfig`s, `SweepSettings`, tracking
and executor settings); `harness-run` calls it with the parts of its `RunSettings`.
`sweep_from_config` (`harness-sweep`) and `run_many` turn a composed config into those parts
once and call it. Everything cheap (settings, every search space, storage) is validated before
the data is loaded or any trial starts (`check_models`).

Every model comes from the composed config: harness-sweep's one model at `model` and
`search_space`; the models of a run (conf/run.yaml, or harness-sweep `models=[...]`) at
`models.<name>` and `search_spaces.<name>`, each composed by Hydra from conf/models/<name>.yaml
over the command's search path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from harness.data.protocol import protocol_params
from harness.outputs import results_dir_of
from harness.sweep.runner import run_sweep
from harness.sweep.settings import (
    ModelConfig,
    SweepConfigError,
    SweepSettings,
    model_config,
    models_of,
)
from harness.sweep.space import parse_search_space
from harness.sweep.storage import open_storage, resolve_storage_url

__all__ = [
    "check_models",
    "command_line_model_keys",
    "load_split",
    "model_config",
    "preflight",
    "run_many",
    "sweep_from_config",
    "sweep_models",
    "tracking_callbacks",
]

# Model (None: harness-sweep's one model) -> the keys of its config set on the command line
# (`model.X=`, `models.<name>.X=`).
Overridden = Mapping[str | None, Collection[str]]


def sweep_from_config(
    cfg: DictConfig | Mapping[str, Any],
    *,
    split: Any = None,
    executor: Any = None,
    overridden: Overridden | None = None,
) -> optuna.Study:
    """Run the study for `cfg.model` (or, with models composed at `models`, for each of them).

    Args:
        cfg: The composed `sweep` config (dataset, protocol, model, search_space, sweep,
            results_dir, data_dir; `models`/`search_spaces` with `models=[...]`), as a
            DictConfig or plain mapping.
        split: An already loaded split; None = `harness.data.split_from_config` (cached).
        executor: Where trials run (made with this split); None = one from `cfg.executor`
            for this call.
        overridden: Model -> keys set on the command line (`command_line_model_keys`): an
            override of a key the search space samples is refused.

    Returns:
        The study of `cfg.model` (with `models`: the study of the last model).

    Raises:
        SweepConfigError: Any invalid setting, naming the key and the fix, before any trial.
    """
    cfg_dict = _plain(cfg)
    several = bool(cfg_dict.get("models"))
    studies = _sweep_config(
        cfg_dict, models_of(cfg_dict), split=split, executor=executor, overridden=overridden,
        suffix=several,
    )  # fmt: skip
    return list(studies.values())[-1]


def run_many(
    cfg_dict: Mapping[str, Any],
    model_names: Sequence[str],
    *,
    split: Any = None,
    executor: Any = None,
    overridden: Overridden | None = None,
) -> dict[str, optuna.Study]:
    """Sweep several models one after another on one split, each with the same budget.

    Each model's config and search space are `cfg_dict["models"][name]` and
    `cfg_dict["search_spaces"][name]` (`model_config`). `sweep.study_name`, if given, gets
    `-<model>` appended.

    Returns:
        Model name -> its study, in the order given.
    """
    cfg_dict = _plain(cfg_dict)
    models = models_of(cfg_dict, list(model_names))
    return _sweep_config(
        cfg_dict, models, split=split, executor=executor, overridden=overridden, suffix=True
    )


def _sweep_config(
    cfg_dict: dict[str, Any],
    models: Sequence[ModelConfig],
    *,
    split: Any,
    executor: Any,
    overridden: Overridden | None,
    suffix: bool,
) -> dict[str, optuna.Study]:
    """The typed parts of a composed config, checked, then `sweep_models`."""
    from harness.execution import ExecutorSettings
    from harness.tracking import TrackingSettings, check_tracking, make_callbacks

    settings = SweepSettings.from_mapping(cfg_dict.get("sweep") or {}).replace(models=None)
    results_dir = results_dir_of(cfg_dict)
    if split is None:
        check_protocol_of(cfg_dict.get("dataset") or {}, cfg_dict.get("protocol") or {})
    preflight_models(models, overridden, several=bool(cfg_dict.get("models")))
    check_models(models, settings, results_dir)
    callbacks = make_callbacks(
        check_tracking(TrackingSettings.from_mapping(cfg_dict.get("tracking")))
    )
    executor_settings = ExecutorSettings.from_config(cfg_dict)
    if split is None:
        split = load_split(cfg_dict)
    return sweep_models(
        models,
        settings=settings,
        dataset_name=cfg_dict["dataset"]["name"],
        results_dir=results_dir,
        config=cfg_dict,
        callbacks=callbacks,
        executor_settings=executor_settings,
        split=split,
        executor=executor,
        suffix=suffix,
    )


def sweep_models(
    models: Sequence[ModelConfig],
    *,
    settings: SweepSettings,
    dataset_name: str,
    results_dir: Path,
    config: Mapping[str, Any],
    callbacks: Sequence[Any],
    executor_settings: Any,
    split: Any,
    executor: Any = None,
    suffix: bool = True,
) -> dict[str, optuna.Study]:
    """Sweep each model one after another on `split`, each with the same budget.

    Args:
        models: The models, in order.
        settings: The sweep settings; with `suffix`, a `study_name` gets `-<model>` appended.
        config: The composed config (plain), recorded in each study with the model's own
            config and search space as `model` and `search_space`.
        callbacks: Optuna callbacks of every study (tracking; `harness.tracking.make_callbacks`).
        executor_settings: `ExecutorSettings`, for an executor of this call when `executor` is
            None.

    Returns:
        Model name -> its study, in the order given.
    """
    studies = {}
    with _executor(executor_settings, settings, split, executor) as executor:
        for model in models:
            model_settings = settings
            if suffix and settings.study_name:
                model_settings = settings.replace(study_name=f"{settings.study_name}-{model.name}")
            studies[model.name] = run_sweep(
                split=split,
                dataset_name=dataset_name,
                model_name=model.name,
                model_params=dict(model.params),
                search_space=dict(model.search_space),
                settings=model_settings,
                results_dir=results_dir,
                config={
                    **config,
                    "model": dict(model.params),
                    "search_space": dict(model.search_space),
                },
                callbacks=list(callbacks),
                executor=executor,
            )
    return studies


@contextlib.contextmanager
def _executor(
    executor_settings: Any, settings: SweepSettings, split: Any, given: Any
) -> Iterator[Any]:
    """`given`, or the executor `executor_settings` names, for this call only (storage
    coordination on the local machine: None, its workers are started by the runner)."""
    from harness.execution import make_executor

    local = executor_settings.backend == "local"
    if given is not None or (settings.coordination != "pool" and local):
        yield given
        return
    executor = make_executor(executor_settings, split)
    try:
        yield executor
    except BaseException:
        executor.close(cancel=getattr(executor, "settings", None) is None
                       or executor.settings.cancel_on_exit)  # fmt: skip
        raise
    executor.close()


def command_line_model_keys(task_overrides: Sequence[str]) -> dict[str | None, set[str]]:
    """Model -> keys of its config set by these Hydra task overrides (None: harness-sweep's
    one model, `model.X=`; a name: `models.<name>.X=`)."""
    found: dict[str | None, set[str]] = {}
    for override in task_overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        parts = key.split(".")
        if parts[0] == "model" and len(parts) == 2:
            found.setdefault(None, set()).add(parts[1])
        elif parts[0] == "models" and len(parts) == 3:
            found.setdefault(parts[1], set()).add(parts[2])
    return found


def load_split(
    cfg_dict: Mapping[str, Any] | None = None,
    *,
    dataset: Mapping[str, Any] | None = None,
    protocol: Mapping[str, Any] | None = None,
    data_dir: str | Path | None = None,
) -> Any:
    """The split for the dataset and protocol (`cfg_dict["dataset"]`, `["protocol"]`, or given
    one by one), from the cache in `data_dir` when present."""
    from harness.data import default_cache_dir, split_from_config

    if cfg_dict is not None:
        dataset, protocol = cfg_dict["dataset"], cfg_dict["protocol"]
        data_dir = cfg_dict.get("data_dir")
    cache_dir = data_dir or default_cache_dir()
    return split_from_config(dict(dataset or {}), dict(protocol or {}), Path(cache_dir))


def check_models(models: Sequence[ModelConfig], settings: SweepSettings, results_dir: Path) -> None:
    """Every search space parses, the study name, GPUs and storage are usable (before data)."""
    for model in models:
        parse_search_space(model.search_space, model_name=model.name)
    if settings.study_name:  # exports go to results/<study name>/: checked before any work
        from harness.outputs import check_study_name

        check_study_name(settings.study_name)
    _check_gpus(settings)
    open_storage(resolve_storage_url(settings, results_dir), settings)


def check_protocol_of(
    dataset: Mapping[str, Any], protocol: Mapping[str, Any], *, test_users: bool = False
) -> None:
    """The protocol's parameters, before the data loads (`harness.sweep.preflight`)."""
    from harness.sweep.preflight import check_protocol

    check_protocol(protocol_params(dataset, protocol), test_users=test_users)


def preflight_models(
    models: Sequence[ModelConfig], overridden: Overridden | None = None, *, several: bool = True
) -> None:
    """Check each model's config and search space before any data loads.

    Args:
        overridden: Model (None: harness-sweep's one model) -> keys of its config set on the
            command line (`command_line_model_keys`); a key its search space samples is
            refused, since the trials would ignore it.
        several: The models sit at `models.<name>` (named so in messages), not at `model`.

    Raises:
        SweepConfigError: One line naming the key, its value and the allowed range.
        UnknownModelError: A model the registry doesn't know (e.g. of a user config folder).
    """
    from harness.models.registry import model_spec
    from harness.sweep.preflight import check_model_config, check_overrides

    overridden = overridden or {}
    for model in models:
        model_spec(model.name)  # a model of a user's config folder the registry doesn't know
        space = parse_search_space(model.search_space, model_name=model.name)
        keys = overridden.get(model.name if several else None) or ()
        check_overrides(
            model.name,
            {k: model.params[k] for k in keys if k in model.params},
            space,
            model.search_space,
            prefix=(f"models.{model.name}", f"search_spaces.{model.name}") if several else None,
        )
        check_model_config(model.name, model.params, space, model.search_space)


def preflight(
    cfg_dict: Mapping[str, Any],
    model_names: Sequence[str],
    *,
    protocol: bool = True,
    test_users: bool = False,
    overridden: Overridden | None = None,
) -> None:
    """`check_protocol_of` and `preflight_models` on a composed config (plain or DictConfig).

    Args:
        protocol: Check `cfg_dict["protocol"]` too (False when the caller passes a split).
        test_users: The protocol must give test users (the benchmark needs them).
    """
    cfg_dict = _plain(cfg_dict)
    if protocol:
        check_protocol_of(
            cfg_dict.get("dataset") or {}, cfg_dict.get("protocol") or {}, test_users=test_users
        )
    several = isinstance(cfg_dict.get("models"), Mapping) and bool(cfg_dict.get("models"))
    preflight_models(models_of(cfg_dict, list(model_names)), overridden, several=several)


def tracking_callbacks(cfg_dict: Mapping[str, Any]) -> list[Any]:
    """Optuna callbacks for `cfg.tracking` (MLflow, TensorBoard), each backend checked first.

    Raises:
        TrackingConfigError: (a SweepConfigError) a bad key or an unreachable MLflow store.
    """
    from harness.tracking import TrackingSettings, check_tracking, make_callbacks

    return make_callbacks(check_tracking(TrackingSettings.from_mapping(cfg_dict.get("tracking"))))


def _check_gpus(settings: SweepSettings) -> None:
    """`sweep.gpus` must name visible GPUs: checked before the data is loaded."""
    if not settings.gpus:
        return
    from harness.devices import DeviceConfigError, check_gpus, visible_gpus

    try:
        check_gpus(settings.gpus, visible_gpus())
    except DeviceConfigError as error:
        raise SweepConfigError(str(error)) from None


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)
