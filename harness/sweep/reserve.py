"""A sweep on a disk that fills up: a little space held back to fail the running trials and
write the exports when the disk is full, and the one-line error that ends the sweep.

When a write of the sweep meets a full disk (ENOSPC, EDQUOT, SQLite's "database or disk is
full"), nothing more can be recorded: not even the failure of the trials in flight, which would
stay RUNNING, nor the exports. So a sweep first allocates `.space-reserve` (`SIZE` bytes, real
blocks) in its results folder and beside its SQLite or journal file. On a full disk it deletes
the reserve, fails its own running trials with the reason (their parameters enqueued again,
as for a lost worker, so the rerun evaluates them), writes the exports and exits with one line.
The reserve is held only while the sweep runs (released at its end, whatever the outcome);
a sweep that cannot allocate it (the disk is already full) goes on without it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from harness.errors import UserError, environment_error
from harness.sweep.objective import STOPPED
from harness.sweep.storage import is_journal_url, journal_path, sqlite_path

log = logging.getLogger("harness.sweep")

NAME = ".space-reserve"
SIZE = 4 << 20  # failing a window of trials takes ~50 kB of SQLite log; the rest is for exports
_FULL = ("database or disk is full", "no space left")


def full_disk(error: BaseException | None) -> UserError | None:
    """The one-line error for `error` if it (or an exception it was raised from) is a full
    disk, else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        number = getattr(error, "errno", None)
        if number in (errno.ENOSPC, errno.EDQUOT) or any(t in str(error).lower() for t in _FULL):
            return environment_error(error) or UserError(str(error))
        error = error.__cause__ or error.__context__
    return None


def stop_reason(full: UserError) -> str:
    """The failure reason of a trial stopped by a full disk (one line)."""
    return f"{STOPPED}: {str(full).split(':', 1)[0]}; the trial is re-run"


class SpaceReserve:
    """Files of `size` bytes that a sweep deletes when it finds the disk full.

    Args:
        folders: Where the sweep writes (results folder, the storage file's folder).
        size: Bytes per reserve file.
    """

    def __init__(self, folders: Iterable[Path], size: int = SIZE) -> None:
        self.paths = list(dict.fromkeys(Path(folder).resolve() / NAME for folder in folders))
        self.size = size

    @classmethod
    def for_sweep(cls, results_dir: Path | str, storage_url: str) -> SpaceReserve:
        """The reserves of a sweep writing to `results_dir` and `storage_url`."""
        folders = [Path(results_dir)]
        if storage_url.startswith("sqlite:///"):
            folders.append(sqlite_path(storage_url).parent)
        elif is_journal_url(storage_url):
            folders.append(journal_path(storage_url).parent)
        return cls(folders)

    def make(self) -> None:
        """Allocate the reserve files that are missing (best effort: a disk without the space
        or a folder that can't be written is no error here)."""
        for path in self.paths:
            try:
                if path.exists() and path.stat().st_size >= self.size:
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    _allocate(fd, self.size)
                finally:
                    os.close(fd)
            except OSError as error:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
                log.debug("no space reserve at %s: %s", path, error)

    def release(self) -> int:
        """Delete the reserve files; return the bytes freed."""
        freed = 0
        for path in self.paths:
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                freed += size
        return freed


def _allocate(fd: int, size: int) -> None:
    """Give the file `size` bytes of real blocks (not a sparse file)."""
    allocate = getattr(os, "posix_fallocate", None)  # not on macOS
    if allocate is not None:
        allocate(fd, 0, size)
        return
    chunk = b"\0" * (1 << 20)
    for start in range(0, size, len(chunk)):
        os.write(fd, chunk[: size - start])
