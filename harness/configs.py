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

import sys
from collections.abc import Sequence
from pathlib import Path

PACKAGE = "harness.conf"
_HERE = Path(__file__).resolve().parent


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
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigDirError(
            f"results_dir={value}: {existing} is not writable (a read-only folder or file "
            "system). Give a writable folder with results_dir=DIR (reading a read-only "
            "archive with harness-report: also hydra.run.dir=DIR for Hydra's run records)."
        )


def check_argv_or_exit(command: str, argv: Sequence[str] | None = None) -> None:
    """`check_user_config_dirs` for a console script: one line on stderr and exit status 2."""
    try:
        check_user_config_dirs(sys.argv[1:] if argv is None else argv)
        check_results_dir(sys.argv[1:] if argv is None else argv)
    except ConfigDirError as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        sys.exit(2)
