"""Where the shipped configs live, and checks of the config folders a user adds.

A checkout (editable install, or `PYTHONPATH` on a clone) reads the repository's top-level
`conf/`, so edits there take effect at once. A built wheel carries the same files as the
package `harness.conf` (copied by setup.py at build time), which Hydra reads through its
`pkg://` search path; the commands then run from any folder.

Users add configs of their own (a dataset, a search space) with Hydra's `--config-dir DIR`
(`-cd DIR`) or `hydra.searchpath=[file:///abs/dir]`; `check_user_config_dirs` turns a folder
that doesn't exist into one clear error instead of Hydra's silent "not found" later. The
checks of the rest of a command line are `harness.argv_checks`.
"""

from __future__ import annotations

import re
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


def absolute_entry(entry: str) -> str:
    """A search-path entry with its folder made absolute (`pkg://` entries unchanged)."""
    if entry.startswith("pkg://"):
        return entry
    path = entry[len("file://") :] if entry.startswith("file://") else entry
    return "file://" + str(Path(path).expanduser().resolve())


def quoted_entry(entry: str) -> str:
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
            entries.append(absolute_entry(args[i + 1]))
            skip = True
        elif arg.startswith("--config-dir="):
            entries.append(absolute_entry(arg.split("=", 1)[1]))
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            searchpath = [absolute_entry(e) for e in _searchpath_entries(arg.split("=", 1)[1])]
        else:
            rest.append(arg)
    entries += searchpath
    if not entries:
        return hydra_config_path(), list(argv)
    shipped = conf_dir()  # a folder in a checkout and in a wheel (harness/conf/)
    main, others = entries[0], [e for e in entries[1:] if e != absolute_entry(str(shipped))]
    config_path = main[len("file://") :] if main.startswith("file://") else main
    rest += ["--config-dir", str(shipped)]
    if others:
        rest.append(f"hydra.searchpath=[{','.join(quoted_entry(e) for e in others)}]")
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
