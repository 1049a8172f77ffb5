"""The console scripts' checks of their arguments, before Hydra composes anything.

`prepare_argv` (via `check_argv_or_exit`) turns a mistake on the command line into one line
naming the problem and the fix, exit status 2: a results folder that can't be written, a
`model.X=` given to a command that composes several models, an unknown model name, a key no
config has (with the closest valid key). Where the config folders are and how a user's own
folders are put first is `harness.configs`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from harness.configs import (
    ConfigDirError,
    absolute_entry,
    check_user_config_dirs,
    conf_dir,
    quoted_entry,
    user_config_dirs,
    user_dirs_first,
)


def _override(argv: Sequence[str], key: str) -> str | None:
    """The last value given for ``key`` on the command line (``key=v``, ``+key=v``, ...)."""
    found = None
    for arg in argv:
        name, sep, value = arg.lstrip("+~").partition("=")
        if sep and name == key:
            found = value.strip().strip("'\"")
    return found


MIN_FREE_BYTES = 256 * 1024  # Hydra's run records alone need a few pages


def check_results_dir(argv: Sequence[str]) -> None:
    """Refuse a results folder that can't be written, before Hydra tries to create its run
    folder in it (which would end in a long traceback).

    Skipped when ``hydra.run.dir`` is given (e.g. a report from a read-only archive) or the
    value is an interpolation.
    """
    import os

    if _override(argv, "hydra.run.dir") is not None:
        return
    value = _override(argv, "results_dir") or os.environ.get("VAE_SWEEP_RESULTS") or "results"
    if "${" in value:
        return
    path = Path(value).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigDirError(
            f"results_dir={value}: {existing} is a file, not a folder. Give a folder with "
            "results_dir=DIR."
        )
    import shutil

    if existing.is_dir() and shutil.disk_usage(existing).free < MIN_FREE_BYTES:
        raise ConfigDirError(
            f"results_dir={value}: no space left on the device of {existing} "
            f"({shutil.disk_usage(existing).free:,} bytes free). Free some space and rerun the "
            "same command (finished trials and test scores are kept)."
        )
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigDirError(
            f"results_dir={value}: {existing} is not writable (a read-only folder or file "
            "system). Give a writable folder with results_dir=DIR (reading a read-only "
            "archive with harness-report: also hydra.run.dir=DIR for Hydra's run records)."
        )


class UnknownKeyError(ValueError):
    """An override names a key the composed config doesn't have."""


def _all_keys(node: object, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config (interpolations left unresolved)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    keys = []
    if isinstance(node, dict):
        for key, child in node.items():
            path = f"{prefix}{key}"
            keys.append(path)
            keys.extend(_all_keys(child, path + "."))
    return keys


def _compose(config_name: str, overrides: list[str], folders: Sequence[Path] = ()) -> Any:
    """Compose `config_name` from the shipped configs with the user's config `folders` after
    them (the Compose API cannot put them first, as `user_dirs_first` does for the command)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if folders:
        listed = ",".join(quoted_entry(absolute_entry(str(f))) for f in folders)
        overrides = [*overrides, f"hydra.searchpath=[{listed}]"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            return compose(config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _user_file_has(bad: str, folders: Sequence[Path]) -> bool:
    """Whether a user folder's own model file has the key of `model(s).[<name>.]<key>`."""
    parts = bad.split(".")
    if parts[0] == "models" and len(parts) == 3:
        name, key = parts[1], parts[2]
    elif parts[0] == "model" and len(parts) == 2:
        return bool(folders)  # which model file: not known here; left to Hydra
    else:
        return False
    for folder in folders:
        path = Path(folder) / "model" / f"{name}.yaml"
        if path.is_file():
            return key in (OmegaConf.load(path) or {})
    return False


def _model_key_error(bad: str, cfg: Any) -> str | None:
    """The message for `models.<name>.<key>=` that no model has, or None for other keys."""
    import difflib

    parts = bad.split(".")
    if parts[0] not in ("models", "search_spaces") or len(parts) < 2 or cfg is None:
        return None
    models = list(cfg.get("models") or {})
    name = parts[1]
    if name not in models:
        return (
            f"{bad}: {name!r} is not among this run's models ({', '.join(models)}); select it "
            f"with 'models=[{','.join([*models, name])}]'"
        )
    if parts[0] != "models" or len(parts) != 3:
        return None
    keys = list(cfg["models"][name])
    close = difflib.get_close_matches(parts[2], keys, n=1, cutoff=0.5)
    hint = f"; did you mean models.{name}.{close[0]}?" if close else ""
    return f"model {name} has no key {parts[2]!r} ({bad}){hint}"


def check_override_keys(
    config_name: str, argv: Sequence[str], folders: Sequence[Path] = ()
) -> None:
    """Raise `UnknownKeyError` naming the closest valid key when an override's key is not in
    the composed config (Hydra's own message only suggests adding it with ``+``).

    Composed with the user's config `folders` (after the shipped ones: a key that only a user
    folder's own model file has is left to Hydra). Skipped for ``search_space(s).*``
    (free-form); any other composition problem is left to Hydra.
    """
    import difflib
    import re

    from hydra.errors import ConfigCompositionException

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    if any(a.startswith(("--config-name", "-cn")) for a in argv):
        return
    overrides = [
        a
        for a in args
        if not a.lstrip("+~").startswith(("search_space.", "search_spaces.", "hydra."))
        and not a.startswith(("+", "~"))
    ]
    if not overrides:
        return

    def composed(items: list[str]) -> Any:
        return _compose(config_name, items, folders)

    try:
        composed(overrides)
        return
    except ConfigCompositionException as error:
        found = re.search(r"Could not override '([^']+)'", str(error))
        if not found:
            return
        bad = found.group(1)
    except Exception:  # not ours to judge: Hydra reports it
        return
    if _user_file_has(bad, folders):
        return
    rest = [a for a in overrides if a.split("=", 1)[0] != bad]
    try:
        cfg = composed(rest)
    except Exception:
        cfg = None
    message = _model_key_error(bad, cfg)
    if message:
        raise UnknownKeyError(message)
    keys = _all_keys(cfg) if cfg is not None else []
    parent = bad.rsplit(".", 1)[0] if "." in bad else ""
    siblings = [k for k in keys if (k.rsplit(".", 1)[0] if "." in k else "") == parent]
    close = difflib.get_close_matches(bad, siblings, n=1, cutoff=0.6) or difflib.get_close_matches(
        bad, keys, n=1, cutoff=0.75
    )
    hint = f": did you mean {close[0]}?" if close else ""
    listed = ""
    if not close and siblings:
        listed = f" Valid keys there: {', '.join(sorted(siblings)[:30])}."
    raise UnknownKeyError(
        f"unknown key {bad}{hint}{listed} (to add a new key on purpose, write +{bad}=...)"
    )


# Commands that compose several models (conf/run.yaml): `model.X=`/`model=` would name none.
MULTI_MODEL_COMMANDS = ("harness-run", "harness-benchmark", "harness-report")


def check_model_overrides(command: str, argv: Sequence[str]) -> None:
    """Refuse `model.X=...` and `model=...` on the commands that compose several models
    (harness-sweep too when given `models=[...]`), naming what to write instead (one line)."""
    several = any(a.lstrip("+").startswith(("models=", "sweep.models=")) for a in argv)
    if command not in MULTI_MODEL_COMMANDS and not several:
        return
    if command not in MULTI_MODEL_COMMANDS:  # harness-sweep: `model=` still picks its default
        argv = [a for a in argv if a.lstrip("+~").partition("=")[0] != "model"]
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep:
            continue
        if key == "model":
            raise UnknownKeyError(
                f"{arg}: {command} composes every model of `models`; choose them with "
                f"'models=[{value},...]' (model={value} is harness-sweep's one-model choice)"
            )
        if key.startswith("model."):
            sub = key[len("model.") :]
            raise UnknownKeyError(
                f"{arg}: {command} composes several models; write models.<name>.{sub}={value} "
                f"for one model"
                + (
                    f", or {'' if command in MULTI_MODEL_COMMANDS else '++'}budget.{sub}={value} "
                    "for every iterative model"
                    if sub in ("n_epochs", "patience")
                    else ""
                )
            )


def check_model_names(argv: Sequence[str], folders: Sequence[Path] = ()) -> None:
    """Refuse a `models=[...]` name with no `models/<name>.yaml` in the command's config folders,
    as an unknown model (one line listing the known ones)."""
    value = next(
        (a.split("=", 1)[1] for a in reversed(list(argv)) if a.lstrip("+").startswith("models=")),
        None,
    )
    if value is None:
        return
    names = [n.strip().strip("'\"") for n in value.strip().strip("[]").split(",") if n.strip()]
    known = sorted(
        {
            p.stem
            for folder in [conf_dir(), *folders]
            for p in (Path(folder) / "models").glob("*.yaml")
        }
    )
    for name in names:
        if name not in known:
            raise UnknownKeyError(
                f"models: unknown model {name!r}: choose one of {', '.join(known)}"
            )


COMMAND_CONFIGS = {
    "harness-sweep": "sweep",
    "harness-run": "run",
    "harness-benchmark": "benchmark",
    "harness-report": "report",
    "harness-split": "split",
}


def prepare_argv(command: str, argv: Sequence[str]) -> tuple[str, list[str]]:
    """Check a console script's arguments and return Hydra's `config_path` and arguments
    (`user_dirs_first`).

    Raises:
        ConfigDirError, UnknownKeyError: one line naming the problem and the fix.
    """
    args = list(argv)
    check_user_config_dirs(args)
    check_results_dir(args)
    folders = [Path(folder).expanduser() for _, folder in user_config_dirs(args)]
    if command in COMMAND_CONFIGS and not any(
        a in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help") for a in args
    ):
        check_model_overrides(command, args)
        plain = user_dirs_first(args)[1] if folders else args  # without the folder arguments
        plain = [a for a in plain if not a.lstrip("+").startswith("hydra.searchpath=")]
        check_model_names(plain, folders)
        check_override_keys(COMMAND_CONFIGS[command], plain, folders)
    return user_dirs_first(args)


def check_argv_or_exit(command: str, argv: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """`prepare_argv` for a console script: a mistake is one line on stderr and exit status 2.

    Returns:
        (config_path, argv) for Hydra.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        return prepare_argv(command, args)
    except (ConfigDirError, UnknownKeyError) as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        sys.exit(2)
