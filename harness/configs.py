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


def check_override_keys(config_name: str, argv: Sequence[str]) -> None:
    """Raise `UnknownKeyError` naming the closest valid key when an override's key is not in
    the composed config (Hydra's own message only suggests adding it with ``+``).

    Skipped with user config folders (their groups are composed by Hydra itself) and for
    ``search_space.*`` (free-form); any other composition problem is left to Hydra.
    """
    import difflib
    import re

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    if any(a.startswith(("hydra.searchpath", "+hydra.searchpath")) for a in args) or any(
        a.startswith(("--config-dir", "-cd", "--config-name", "-cn")) for a in argv
    ):
        return
    overrides = [
        a
        for a in args
        if not a.lstrip("+~").startswith(("search_space.", "hydra."))
        and not a.startswith(("+", "~"))
    ]
    if not overrides:
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    def composed(items: list[str]):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            return compose(config_name, overrides=items)

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
    finally:
        GlobalHydra.instance().clear()
    rest = [a for a in overrides if a.split("=", 1)[0] != bad]
    try:
        cfg = composed(rest)
    except Exception:
        cfg = None
    finally:
        GlobalHydra.instance().clear()
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


COMMAND_CONFIGS = {
    "harness-sweep": "sweep",
    "harness-run": "run",
    "harness-benchmark": "benchmark",
    "harness-report": "report",
    "harness-split": "split",
}


def check_argv_or_exit(command: str, argv: Sequence[str] | None = None) -> None:
    """`check_user_config_dirs` for a console script: one line on stderr and exit status 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        check_user_config_dirs(args)
        check_results_dir(args)
        if command in COMMAND_CONFIGS and not any(
            a in ("--help", "-h", "--cfg", "-c", "--info") for a in args
        ):
            check_override_keys(COMMAND_CONFIGS[command], args)
    except (ConfigDirError, UnknownKeyError) as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        sys.exit(2)
