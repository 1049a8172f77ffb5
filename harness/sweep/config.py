"""Composed config -> sweep arguments. The only place that knows the config layout.

`sweep_from_config` runs one model's study; `run_many` runs several models with the same
budget on one split. Both validate everything cheap (settings, every search space, storage)
before the data is loaded or any trial starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from harness.configs import conf_dir
from harness.data.protocol import protocol_params
from harness.outputs import results_dir_of
from harness.sweep.runner import run_sweep
from harness.sweep.settings import SweepConfigError, SweepSettings
from harness.sweep.space import parse_search_space
from harness.sweep.study import open_storage, resolve_storage_url

CONF_DIR = conf_dir()  # the checkout's conf/, or the copy in an installed wheel


def sweep_from_config(
    cfg: DictConfig | Mapping[str, Any], *, split: Any = None, executor: Any = None
) -> optuna.Study:
    """Run the study for `cfg.model` (or, with `sweep.models` set, for each listed model).

    Args:
        cfg: The composed `sweep` config (dataset, protocol, model, search_space, sweep,
            results_dir, data_dir), as a DictConfig or plain mapping.
        split: An already loaded split; None = `harness.data.split_from_config` (cached).
        executor: Where trials run (made with this split); None = one from `cfg.executor`
            for this call.

    Returns:
        The study of `cfg.model` (with `sweep.models`: the study of the last model).

    Raises:
        SweepConfigError: Any invalid setting, naming the key and the fix, before any trial.
    """
    cfg_dict = _plain(cfg)
    settings = SweepSettings.from_mapping(cfg_dict.get("sweep") or {})
    if settings.models:
        studies = run_many(cfg_dict, settings.models, split=split, executor=executor)
        return list(studies.values())[-1]
    model_cfg = model_config(cfg_dict, cfg_dict["model"]["name"])[0]  # a budget's epochs: VAEs
    cfg_dict = {**cfg_dict, "model": model_cfg}
    preflight(cfg_dict, [model_cfg["name"]], protocol=split is None)
    _validate(model_cfg["name"], cfg_dict.get("search_space") or {}, settings, cfg_dict)
    callbacks = tracking_callbacks(cfg_dict)
    split = split if split is not None else load_split(cfg_dict)
    with _executor(cfg_dict, settings, split, executor) as executor:
        return run_sweep(
            split=split,
            dataset_name=cfg_dict["dataset"]["name"],
            model_name=model_cfg["name"],
            model_params=model_cfg,
            search_space=cfg_dict.get("search_space") or {},
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
) -> dict[str, optuna.Study]:
    """Sweep several models one after another on one split, each with the same budget.

    Each model's config and search space come from `conf/model/<name>.yaml` and
    `conf/search_space/<name>.yaml`. Values given for `cfg_dict["model"]` that differ from its
    own file (command-line overrides such as `model.n_epochs=50`) carry over to every model
    that has the same key, so a shared setting is set once. `sweep.study_name`, if given, gets
    `-<model>` appended.

    Returns:
        Model name -> its study, in the order given.
    """
    cfg_dict = _plain(cfg_dict)
    settings = SweepSettings.from_mapping(cfg_dict.get("sweep") or {}).replace(models=None)
    per_model = {name: model_config(cfg_dict, name) for name in model_names}
    preflight(cfg_dict, list(model_names), protocol=split is None)
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
    """(model config, search space) for model `name`, resolved against `cfg_dict`.

    Raises:
        SweepConfigError: No `conf/model/<name>.yaml`.
    """
    current = cfg_dict.get("model") or {}
    if current.get("name") == name:
        own = dict(current)
        model_file = CONF_DIR / "model" / f"{name}.yaml"
        if cfg_dict.get("budget") and "n_epochs" in own and model_file.exists():
            if "n_epochs" not in OmegaConf.load(model_file):  # a budget's epochs: VAEs only
                own.pop("n_epochs")
        return own, dict(cfg_dict.get("search_space") or {})
    model_file = CONF_DIR / "model" / f"{name}.yaml"
    if not model_file.exists():
        known = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
        raise SweepConfigError(
            f"sweep.models: unknown model {name!r} (no {model_file}); use one of "
            f"{', '.join(known)}."
        )
    model = OmegaConf.load(model_file)
    space_file = CONF_DIR / "search_space" / f"{name}.yaml"
    space = OmegaConf.load(space_file) if space_file.exists() else OmegaConf.create({})
    for key, value in _overridden_model_keys(current).items():
        if key in model and key != "name":
            model[key] = value
    # Resolve inside the full config, so interpolations such as ${dataset.x} still work.
    root = OmegaConf.create(
        {k: v for k, v in cfg_dict.items() if k not in ("model", "search_space")}
    )
    root.model, root.search_space = model, space
    resolved = OmegaConf.to_container(root, resolve=True)
    return resolved["model"], resolved["search_space"] or {}


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
) -> None:
    """Check the protocol and each model's config and search space before any data loads.

    See `harness.sweep.preflight`. `model.X=` overrides (values differing from
    `conf/model/<carrier>.yaml`) are checked against every model's searched keys, since
    `run_many` carries them to every model that has the key.

    Raises:
        SweepConfigError: One line naming the key, its value and the allowed range.

    Args:
        protocol: Check `cfg_dict["protocol"]` too (False when the caller passes a split).
        test_users: The protocol must give test users (the benchmark needs them).
    """
    from harness.sweep.preflight import check_model_config, check_overrides, check_protocol

    cfg_dict = _plain(cfg_dict)
    if protocol:
        check_protocol(
            protocol_params(cfg_dict.get("dataset") or {}, cfg_dict.get("protocol") or {}),
            test_users=test_users,
        )
    overridden = _overridden_model_keys(cfg_dict.get("model") or {})
    for name in model_names:
        model_cfg, expressions = model_config(cfg_dict, name)
        space = parse_search_space(expressions, model_name=name)
        check_overrides(
            name, {k: v for k, v in overridden.items() if k in model_cfg}, space, expressions
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


def _overridden_model_keys(current: Mapping[str, Any]) -> dict[str, Any]:
    name = current.get("name")
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not name or not path.exists():
        return {}
    own = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    # Interpolated file values cannot be compared unresolved; they are never carried over.
    return {
        k: v
        for k, v in current.items()
        if k in own and own[k] != v and not (isinstance(own[k], str) and "${" in own[k])
    }


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)
