"""One benchmark at a time per results folder, and no staging folder left behind.

A benchmark stages its final models in ``results/.<name>.models-tmp/`` and moves them into
``results/<name>/`` at the end. Two benchmarks writing to one results folder at once would
cross there (and in the test ledger), so `results_lock` serialises them with an ``fcntl``
lock on ``results/.benchmark.lock``: the second waits, says so, then runs (and reuses the
first one's test scores from the ledger).

A staging folder left by a crash (a kill, a full disk) is removed at the next start of any
command (`remove_stale_staging`, under the same lock so a running benchmark's folder is never
touched), and at once when the benchmark fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".benchmark.lock"
STAGING_GLOB = ".*.models-tmp"

log = logging.getLogger(__name__)
_held: dict[str, int] = {}  # lock path -> depth held by this process (re-entrant)


def staging_folder(results_dir: Path, name: str) -> Path:
    """Where a benchmark named ``name`` stages its final models."""
    return Path(results_dir) / f".{name}.models-tmp"


@contextlib.contextmanager
def results_lock(results_dir: Path | str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the benchmark lock of ``results_dir`` for the block (re-entrant in a process).

    Args:
        wait: False = don't wait: yields False when another process holds the lock.

    Yields:
        True when the lock is held.
    """
    folder = Path(results_dir)
    path = folder / LOCK_FILE
    key = str(path.resolve())
    if _held.get(key):
        _held[key] += 1
        try:
            yield True
        finally:
            _held[key] -= 1
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        if not wait:  # a read-only archive: nobody else writes there either
            yield False
            return
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            print(
                f"another benchmark (pid {holder}) is writing to {folder}: waiting for it to "
                "finish (its test scores will then be reused)",
                file=sys.stderr,
                flush=True,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        _held[key] = 1
        try:
            yield True
        finally:
            _held.pop(key, None)
    finally:
        os.close(fd)  # releases the lock


def remove_stale_staging(results_dir: Path | str) -> list[Path]:
    """Remove staging folders left by crashed benchmarks in ``results_dir`` (those of a
    benchmark running now are kept: this only acts when the lock is free).

    Returns:
        The folders removed.
    """
    folder = Path(results_dir)
    if not folder.is_dir() or not any(folder.glob(STAGING_GLOB)):
        return []
    removed = []
    with results_lock(folder, wait=False) as held:
        if not held:
            return []
        for stale in sorted(folder.glob(STAGING_GLOB)):
            shutil.rmtree(stale, ignore_errors=True)
            if not stale.exists():
                removed.append(stale)
    if removed:
        log.warning(
            "removed %d staging folder(s) left by an interrupted benchmark: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed
