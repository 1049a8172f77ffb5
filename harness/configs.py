"""Where the shipped configs live, and checks of the config folders a user adds.

A checkout (editable install, or `PYTHONPATH` on a clone) reads the repository's top-level
`conf/`, so edits there take effect at once. A built wheel carries the same files as the
package `harness.conf` (copied by setup.py at build time), which Hydra reads through its
`pkg://` search path; the commands then run from any folder.

Users add configs of their own (a dataset, a search space) with Hydra's `--config-dir DIR`
(`-cd DIR`) or `hydra.searchpath=[file:///abs/dir]`; `check_user_config_dirs` turns a folder
that doesn't exist into one clear error instead of Hydra's silent "not found" later.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

PACKAGE = "harness.conf"
# `search_space.x=choice(...)` (harness-sweep) or `search_spaces.<model>.x=...` (harness-run)
_SPACE_ARG = re.compile(r"^(?P<key>[+~]?search_spaces?\.[\w.\-]+)=(?P<value>.*\(.*)$", re.DOTALL)
_HERE = Path(__file__).resolve().parent


def _from_budget(key: str, default: Any, *, _root_: Any) -> Any:
    """`${from_budget:n_epochs,100}` in a model file: the run's `budget.n_epochs` when a budget
    sets it (not null), else the model's own value. Commands without a budget (harness-sweep
    by default, `model_defaults`) get the model's own."""
    value = OmegaConf.select(_root_, f"budget.{key}", default=None)
    return default if value is None else value


# Registered on import, which `import harness` does (harness/__init__.py): every composition of
# conf/ (entry points, tests, benchmarks) resolves model files with it.
if not OmegaConf.has_resolver("from_budget"):
    OmegaConf.register_new_resolver("from_budget", _from_budget)


class ConfigDirError(ValueError):
    """A config folder named on the command line does not exist."""


def repo_conf_dir() -> Path | None:
    """The checkout's `conf/` next to the `harness/` package, or None in an installed wheel."""
    path = _HERE.parent / "conf"
    return path if (path / "run.yaml").is_file() else None


def packaged_conf_dir() -> Path | None:
    """The wheel's copy of `conf/` (`harness/conf/`), or None in a checkout."""
    path = _HERE / "conf"
    return path if (path / "run.yaml").is_file() else None


def conf_dir() -> Path:
    """The folder of the harness' own configs: the checkout's `conf/`, else the wheel's copy.

    Raises:
        FileNotFoundError: Neither exists (a broken install); names both places looked at.
    """
    found = repo_conf_dir() or packaged_conf_dir()
    if found is None:
        raise FileNotFoundError(
            f"the harness' configs are missing: neither {_HERE.parent / 'conf'} (a checkout) "
            f"nor {_HERE / 'conf'} (an installed wheel) holds run.yaml. Reinstall vae-sweep "
            "(pip install --force-reinstall vae-sweep) or run from a clone of the repository."
        )
    return found


def hydra_config_path() -> str:
    """`config_path` for `@hydra.main`: the checkout's folder, else `pkg://harness.conf`.

    Absolute on purpose: Hydra resolves a relative path against the decorated function's
    package, not the file.
    """
    repo = repo_conf_dir()
    if repo is not None:
        return str(repo)
    if packaged_conf_dir() is not None:
        return f"pkg://{PACKAGE}"
    return str(conf_dir())  # raises the explanatory FileNotFoundError


def user_config_dirs(argv: Sequence[str]) -> list[tuple[str, str]]:
    """(how it was given, folder) for every file-system config folder on the command line.

    Covers `--config-dir DIR`, `--config-dir=DIR`, `-cd DIR` and the `file://` entries (or
    plain paths) of `hydra.searchpath=[...]`; `pkg://` entries are not folders.
    """
    found: list[tuple[str, str]] = []
    args = list(argv)
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            found.append((arg, args[i + 1]))
        elif arg.startswith("--config-dir="):
            found.append(("--config-dir", arg.split("=", 1)[1]))
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            value = arg.split("=", 1)[1].strip().strip("[]")
            for entry in (e.strip().strip("'\"") for e in value.split(",")):
                if not entry or entry.startswith("pkg://"):
                    continue
                path = entry[len("file://") :] if entry.startswith("file://") else entry
                found.append(("hydra.searchpath", path))
    return found


def _searchpath_entries(value: str) -> list[str]:
    value = value.strip().strip("[]")
    return [e.strip().strip("'\"") for e in value.split(",") if e.strip().strip("'\"")]


def _absolute(entry: str) -> str:
    """A search-path entry with its folder made absolute (`pkg://` entries unchanged)."""
    if entry.startswith("pkg://"):
        return entry
    path = entry[len("file://") :] if entry.startswith("file://") else entry
    return "file://" + str(Path(path).expanduser().resolve())


def _quoted(entry: str) -> str:
    return f"'{entry}'" if "'" not in entry else f'"{entry}"'


def user_dirs_first(argv: Sequence[str]) -> tuple[str, list[str]]:
    """Hydra's `config_path` and arguments that search the user's first config folder before
    the harness' own configs.

    Hydra puts `--config-dir` and `hydra.searchpath` folders after the primary config folder,
    so a user's `model/mult_vae.yaml` would never replace the shipped one. Here the user's
    first folder (`--config-dir`, else the first `hydra.searchpath` entry) becomes Hydra's
    primary folder and the shipped folder is added with `--config-dir` right after it (where
    Hydra finds `run.yaml` and the other primary configs, unless the user's folder has its
    own); further user folders stay in `hydra.searchpath`, searched after both. So the first
    folder's files win over shipped files of the same name, and every folder's new files join
    the groups as before.

    Returns:
        (config_path, argv); without user folders (hydra_config_path(), argv unchanged).
    """
    entries: list[str] = []
    rest: list[str] = []
    searchpath: list[str] = []
    args = list(argv)
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg in ("--config-dir", "-cd") and i + 1 < len(args):
            entries.append(_absolute(args[i + 1]))
            skip = True
        elif arg.startswith("--config-dir="):
            entries.append(_absolute(arg.split("=", 1)[1]))
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            searchpath = [_absolute(e) for e in _searchpath_entries(arg.split("=", 1)[1])]
        else:
            rest.append(arg)
    entries += searchpath
    if not entries:
        return hydra_config_path(), list(argv)
    shipped = conf_dir()  # a folder in a checkout and in a wheel (harness/conf/)
    main, others = entries[0], [e for e in entries[1:] if e != _absolute(str(shipped))]
    config_path = main[len("file://") :] if main.startswith("file://") else main
    rest += ["--config-dir", str(shipped)]
    if others:
        rest.append(f"hydra.searchpath=[{','.join(_quoted(e) for e in others)}]")
    return config_path, rest


def quote_search_space_args(argv: list[str]) -> list[str]:
    """Quote sweep expressions given for `search_space.*` on the command line.

    The shell strips the quotes of `search_space.beta='interval(0.05,0.5)'`, and Hydra then
    reads a sweep that it refuses outside --multirun. Here the value is a string to be parsed
    later, so it is quoted for Hydra; already quoted values are left alone.
    """
    quoted = []
    for arg in argv:
        match = _SPACE_ARG.match(arg)
        value = match.group("value") if match else ""
        if not match or value[:1] in ("'", '"'):
            quoted.append(arg)
            continue
        if "'" not in value:
            value = f"'{value}'"
        elif '"' not in value:
            value = f'"{value}"'
        else:
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        quoted.append(f"{match.group('key')}={value}")
    return quoted


def add_search_space_keys(argv: list[str]) -> list[str]:
    """`search_space.x=v` -> `++search_space.x=v` (and `search_spaces.<model>.x=v` likewise): add
    the key, or override it if present.

    A search space is free-form (any constructor argument may be searched), but Hydra refuses
    a key the model's file lacks ("Key 'beta' is not in struct") unless it is prefixed `+`.
    `++` adds or overrides, so users never need to know which keys a space file lists.
    """
    spaces = ("search_space.", "search_spaces.")
    return [f"++{arg}" if arg.startswith(spaces) and "=" in arg else arg for arg in argv]


def check_user_config_dirs(argv: Sequence[str]) -> None:
    """Raise `ConfigDirError` naming the first user config folder that is not a directory."""
    for given, folder in user_config_dirs(argv):
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ConfigDirError(
                f"{given}: config folder {folder!r} does not exist (resolved: {path.resolve()}). "
                "Give an existing folder holding your configs, e.g. --config-dir "
                "$PWD/my_conf with my_conf/dataset/my_data.yaml, then dataset=my_data."
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
        listed = ",".join(_quoted(_absolute(str(f))) for f in folders)
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
