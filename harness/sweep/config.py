"""Composed config -> sweep arguments. The only place that knows the config layout.

`sweep_from_config` runs one model's study; `run_many` runs several models with the same
budget on one split. Both validate everything cheap (settings, every search space, storage)
before the data is loaded or any trial starts.

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
from harness.sweep.settings import SweepConfigError, SweepSettings
from harness.sweep.space import parse_search_space
from harness.sweep.study import open_storage, resolve_storage_url

# Model -> the keys of its config set on the command line (`model.X=`, `models.<name>.X=`).
Overridden = Mapping[str, Collection[str]]


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
    settings = SweepSettings.from_mapping(cfg_dict.get("sweep") or {})
    if settings.models and not cfg_dict.get("models"):
        raise SweepConfigError(
            f"sweep.models={list(settings.models)}: choose several models with "
            f"models=[{','.join(settings.models)}] (conf/models/<name>.yaml), not sweep.models"
        )
    if cfg_dict.get("models"):
        studies = run_many(
            cfg_dict, list(cfg_dict["models"]), split=split, executor=executor,
            overridden=overridden,
        )  # fmt: skip
        return list(studies.values())[-1]
    model_cfg, space = model_config(cfg_dict, cfg_dict["model"]["name"])
    preflight(cfg_dict, [model_cfg["name"]], protocol=split is None, overridden=overridden)
    _validate(model_cfg["name"], space, settings, cfg_dict)
    callbacks = tracking_callbacks(cfg_dict)
    split = split if split is not None else load_split(cfg_dict)
    with _executor(cfg_dict, settings, split, executor) as executor:
        return run_sweep(
            split=split,
            dataset_name=cfg_dict["dataset"]["name"],
            model_name=model_cfg["name"],
            model_params=model_cfg,
            search_space=space,
            settings=settings,
            results_dir=results_dir_of(cfg_dict),
            config=cfg_dict,
            callbacks=callbacks,
            executor=executor,
        )


@contextlib.contextmanager
def _executor(
    cfg_dict: Mapping[str, Any], settings: SweepSettings, split: Any, given: Any
) -> Iterator[Any]:
    """`given`, or the executor `cfg.executor` names, for this call only (storage coordination
    on the local machine: None, its workers are started by the runner)."""
    from harness.execution import ExecutorSettings, make_executor

    executor_settings = ExecutorSettings.from_config(cfg_dict)
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
    settings = SweepSettings.from_mapping(cfg_dict.get("sweep") or {}).replace(models=None)
    per_model = {name: model_config(cfg_dict, name) for name in model_names}
    preflight(cfg_dict, list(model_names), protocol=split is None, overridden=overridden)
    for name, (_, space) in per_model.items():
        _validate(name, space, settings, cfg_dict)
    callbacks = tracking_callbacks(cfg_dict)
    split = split if split is not None else load_split(cfg_dict)
    studies = {}
    with _executor(cfg_dict, settings, split, executor) as executor:
        for name, (model_cfg, space) in per_model.items():
            model_settings = settings
            if settings.study_name:
                model_settings = settings.replace(study_name=f"{settings.study_name}-{name}")
            studies[name] = run_sweep(
                split=split,
                dataset_name=cfg_dict["dataset"]["name"],
                model_name=name,
                model_params=model_cfg,
                search_space=space,
                settings=model_settings,
                results_dir=results_dir_of(cfg_dict),
                config={**cfg_dict, "model": model_cfg, "search_space": space},
                callbacks=callbacks,
                executor=executor,
            )
    return studies


def model_config(cfg_dict: Mapping[str, Any], name: str) -> tuple[dict, dict]:
    """(model config, search space) of model `name` in the composed config.

    `models.<name>` and `search_spaces.<name>` (a run's models, composed by Hydra from
    conf/models/<name>.yaml), else harness-sweep's one model `model` and `search_space`.

    Raises:
        SweepConfigError: `name` is not among the composed models.
    """
    models = cfg_dict.get("models") or {}
    if isinstance(models, Mapping) and name in models:
        spaces = cfg_dict.get("search_spaces") or {}
        return dict(models[name]), dict(spaces.get(name) or {})
    current = cfg_dict.get("model") or {}
    if current.get("name") == name:
        return dict(current), dict(cfg_dict.get("search_space") or {})
    composed = list(models) if isinstance(models, Mapping) else []
    if current.get("name"):
        composed.append(current["name"])
    raise SweepConfigError(
        f"unknown model {name!r}: not among the composed models ({', '.join(composed) or 'none'});"
        f" select it with models=[...] (conf/models/{name}.yaml)"
    )


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


def load_split(cfg_dict: Mapping[str, Any]) -> Any:
    """The split for `cfg_dict["dataset"]` and `["protocol"]`, from the cache when present."""
    from harness.data import default_cache_dir, split_from_config

    cache_dir = cfg_dict.get("data_dir") or default_cache_dir()
    return split_from_config(cfg_dict["dataset"], cfg_dict["protocol"], Path(cache_dir))


def _validate(
    model_name: str, space: Mapping[str, Any], settings: SweepSettings, cfg_dict: Mapping
) -> None:
    parse_search_space(space, model_name=model_name)
    if settings.study_name:  # exports go to results/<study name>/: checked before any work
        from harness.outputs import check_study_name

        check_study_name(settings.study_name)
    _check_gpus(settings)
    open_storage(resolve_storage_url(settings, results_dir_of(cfg_dict)), settings)


def preflight(
    cfg_dict: Mapping[str, Any],
    model_names: Sequence[str],
    *,
    protocol: bool = True,
    test_users: bool = False,
    overridden: Mapping[str | None, Collection[str]] | None = None,
) -> None:
    """Check the protocol and each model's config and search space before any data loads.

    See `harness.sweep.preflight`.

    Raises:
        SweepConfigError: One line naming the key, its value and the allowed range.

    Args:
        protocol: Check `cfg_dict["protocol"]` too (False when the caller passes a split).
        test_users: The protocol must give test users (the benchmark needs them).
        overridden: Model (None: harness-sweep's one model) -> keys of its config set on the
            command line (`command_line_model_keys`); a key its search space samples is
            refused, since the trials would ignore it.
    """
    from harness.models.registry import model_spec
    from harness.sweep.preflight import check_model_config, check_overrides, check_protocol

    cfg_dict = _plain(cfg_dict)
    if protocol:
        check_protocol(
            protocol_params(cfg_dict.get("dataset") or {}, cfg_dict.get("protocol") or {}),
            test_users=test_users,
        )
    overridden = overridden or {}
    many = isinstance(cfg_dict.get("models"), Mapping) and bool(cfg_dict.get("models"))
    for name in model_names:
        model_spec(name)  # a model of a user's config folder the registry doesn't know: one line
        model_cfg, expressions = model_config(cfg_dict, name)
        space = parse_search_space(expressions, model_name=name)
        keys = overridden.get(name if many else None) or ()
        check_overrides(
            name,
            {k: model_cfg[k] for k in keys if k in model_cfg},
            space,
            expressions,
            prefix=(f"models.{name}", f"search_spaces.{name}") if many else None,
        )
        check_model_config(name, model_cfg, space, expressions)


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
