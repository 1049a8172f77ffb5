"""Safe output writing shared by every stage: names, folder replacement, files, permissions.

Rules (see issue 10):
- An output name is checked before anything is touched: a plain, non-empty name without path
  separators, not dots-only and not hidden (hidden names are this module's temp namespace).
- A folder is only ever replaced if it carries the marker file `MARKER` written by this
  module (or is empty): a command can never delete what it did not create.
- Replacement is crash-safe. The new folder is filled under a hidden temp name and swapped in
  with one atomic exchange (Linux renameat2 RENAME_EXCHANGE), so a kill at any instant leaves
  either the old or the new folder under its name. Where the exchange is unavailable, two
  renames go through a `.old` sibling, and `recover` (run by every later write and read)
  puts the old folder back if the kill fell between them.
- Leftovers of interrupted writes (temp and `.old` siblings of dead processes) are removed at
  the next write or read of the same name.
- Files and folders get the user's umask (mkstemp/mkdtemp would make them 0600/0700).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.secrets import mask_text

MARKER = ".vae-sweep-output"
_HOST = socket.gethostname()
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>.+)-(?P<pid>\d+)-\w+$")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=-]{0,199}$")

# Fault-injection hook for tests: called with the name of each step of a folder replacement
# ("filled", "moved-old", "swapped"); a test makes it kill the process at that step.
step_hook: Callable[[str], None] | None = None


class UnsafeOutputError(UserError, ValueError):
    """An output name or folder that the harness refuses to write (it could destroy data)."""


def check_name(name: object, key: str) -> str:
    """``name`` if it is a safe output folder name, else UnsafeOutputError naming ``key``.

    Safe: non-empty text, no "/" "\\" or NUL, not "." / ".." / dots-only, not starting with
    "." (hidden names are reserved for temp folders), at most 200 characters.
    """
    text = "" if name is None else str(name)
    problem = None
    if not text.strip():
        problem = "is empty"
    elif any(sep in text for sep in ("/", "\\", "\0")) or (os.altsep and os.altsep in text):
        problem = "contains a path separator"
    elif set(text) == {"."}:
        problem = "is only dots"
    elif text.startswith("."):
        problem = "starts with '.' (hidden names are reserved for temporary folders)"
    elif len(text) > 200:
        problem = "is longer than 200 characters"
    if problem:
        raise UnsafeOutputError(
            f"{key}={text!r} {problem}: it names a folder, so use a plain name such as "
            "`my-run` (letters, digits, '-', '_', '.')."
        )
    return text


def check_study_name(name: str, key: str = "sweep.study_name") -> str:
    """A study name is also its export folder under results/: a restricted character set."""
    check_name(name, key)
    if not _STUDY_NAME.match(name):
        raise UnsafeOutputError(
            f"{key}={name!r} has characters outside letters, digits and . _ + = -: the study's "
            "exports go to results/<study name>/, so use only those characters."
        )
    return name


def output_dir(parent: Path | str, name: str, key: str) -> Path:
    """``parent / name`` after checking ``name`` (use instead of joining a user's name)."""
    return Path(parent) / check_name(name, key)


# --- permissions ------------------------------------------------------------------------

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def give_umask_mode(path: Path | str, *, folder: bool = False) -> None:
    """chmod ``path`` to what open()/mkdir() would have given it: 0o666/0o777 & ~umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file + rename) with the user's umask."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename), umask permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path.parent, path.name)  # temp files of killed writers
    prefix = f".{path.name}.tmp-{_HOST}-{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        give_umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- folder replacement -------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sibling(parent: Path, name: str, kind: str) -> Path:
    token = os.urandom(4).hex()
    return parent / f".{name}.{kind}-{_HOST}-{os.getpid()}-{token}"


def _leftovers(parent: Path, name: str) -> list[tuple[Path, str]]:
    """Temp/old siblings of ``name`` left by processes on this host that no longer run."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in parent.iterdir():
            match = _SIBLING.match(entry.name)
            if not match or match["name"] != name or match["host"] != _HOST:
                continue
            if int(match["pid"]) != os.getpid() and not _pid_alive(int(match["pid"])):
                found.append((entry, match["kind"]))
    return found


def recover(parent: Path | str, name: str) -> list[str]:
    """Finish or undo interrupted replacements of ``parent/name``; remove their leftovers.

    A `.old` sibling whose writer died while ``name`` is missing is the previous folder (the
    kill fell between the two renames of the fallback swap): it is renamed back. Every other
    leftover of a dead writer is deleted. Siblings of live or remote writers are left alone.

    Returns:
        What was done, one line per action (for logging).
    """
    parent = Path(parent)
    done = []
    target = parent / name
    items = _leftovers(parent, name)
    for path, kind in sorted(items, key=lambda item: item[1] != "old"):
        try:
            if kind == "old" and not target.exists() and (path / MARKER).exists():
                os.rename(path, target)
                done.append(f"restored {target} from the interrupted write {path.name}")
            else:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                done.append(f"removed {path.name}, left by an interrupted write")
        except OSError:  # a read-only archive: nothing can be cleaned, reading still works
            continue
    return done


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE); False if unsupported here."""
    if not EXCHANGE:
        return False
    libc = _libc()
    if libc is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # e.g. a filesystem without exchange support: use the fallback
    raise OSError(code, os.strerror(code), str(b))


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.renameat2  # noqa: B018 (probe: glibc >= 2.28)
    except (OSError, AttributeError):
        return None
    return libc


EXCHANGE = _libc() is not None  # tests switch it off to exercise the two-rename fallback


def _step(name: str) -> None:
    if step_hook is not None:
        step_hook(name)


def is_harness_folder(path: Path) -> bool:
    """True if ``path`` is a folder this module wrote (it holds `MARKER`) or is empty."""
    return path.is_dir() and ((path / MARKER).is_file() or not any(path.iterdir()))


def replace_folder(
    parent: Path | str, name: str, fill: Callable[[Path], None], *, key: str = "name"
) -> Path:
    """Create or replace folder ``parent/name`` with what ``fill`` writes, crash-safely.

    Args:
        parent: The folder holding outputs (created if missing).
        name: The output's name (checked by `check_name`).
        fill: Called with an empty temp folder; writes every file into it.
        key: The config key ``name`` came from, quoted in errors.

    Returns:
        ``parent/name``.

    Raises:
        UnsafeOutputError: A bad name, or ``parent/name`` exists and was not written by the
            harness (no `MARKER` file) - it is never touched then.
    """
    check_name(name, key)
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    target = parent / name
    recover(parent, name)
    _check_replaceable(target, key)
    tmp = _sibling(parent, name, "tmp")
    tmp.mkdir()
    give_umask_mode(tmp, folder=True)
    try:
        fill(tmp)
        marker = {"written_by": "vae-sweep", "host": _HOST, "pid": os.getpid()}
        marker["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (tmp / MARKER).write_text(json.dumps(marker) + "\n")
        _step("filled")
        _swap_in(tmp, target, parent, name, key)
    finally:
        # After an exchange `tmp` holds the old folder; on an error, the half-written new one.
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_replaceable(target: Path, key: str) -> None:
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not is_harness_folder(target):
        raise UnsafeOutputError(
            f"refusing to replace {target}: it exists and the harness did not write it (no "
            f"{MARKER} file inside), so it may hold someone's data. Fix: set {key} to another "
            "name, or move that folder away yourself."
        )


def _swap_in(tmp: Path, target: Path, parent: Path, name: str, key: str) -> None:
    if not target.exists():
        try:
            os.rename(tmp, target)  # an empty target folder is replaced by rename too
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            _check_replaceable(target, key)  # another writer was faster: replace its folder
    if _exchange(tmp, target):
        _step("swapped")
        return
    old = _sibling(parent, name, "old")
    os.rename(target, old)
    _step("moved-old")
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)  # put the old folder back; a kill here is undone by recover()
        raise
    _step("swapped")
    shutil.rmtree(old, ignore_errors=True)


def results_dir_of(cfg_dict: Mapping[str, Any]) -> Path:
    """`results_dir` as an absolute path (relative = to the directory the command ran in)."""
    return Path(cfg_dict.get("results_dir") or "results").expanduser().resolve()


def scrub_hydra_output() -> list[Path]:
    """Mask passwords in the ``.hydra/*.yaml`` Hydra saved for the running job.

    Hydra writes config.yaml, hydra.yaml and overrides.yaml before the task function starts;
    each entry point calls this first thing, so the files hold no secret once work begins.

    Returns:
        The files rewritten.
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        subdir = hydra_cfg.output_subdir
        folder = Path(hydra_cfg.runtime.output_dir) / subdir if subdir else None
    except Exception:  # not running under Hydra (a library call): nothing was saved
        return []
    if folder is None or not folder.is_dir():
        return []
    changed = []
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text()
        masked = mask_text(text)
        if masked != text:
            write_text(path, masked)
            changed.append(path)
    return changed
