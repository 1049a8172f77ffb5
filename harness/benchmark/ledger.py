"""The persistent test ledger: every scoring of the test users, across runs.

``results/test_ledger.jsonl`` gets one JSON line per scoring: split fingerprint, the
configuration's hash (model, parameters except the seed and run options, variant, cut-offs),
seed, the code fingerprint (see `code_fingerprint`), time, and the file holding its per-user
arrays (``results/test_ledger/<key>.npz``, so statistics can be recomputed). Rerunning the
benchmark on a configuration and seed already scored on the same split with the same code
fingerprint reuses the stored scores instead of meeting the test users again, unless
``benchmark.rescore=true``. A changed fingerprint (model code or a training-relevant package
version changed) means the configuration is scored again, and the report says why. Entries
of older ledgers carry no fingerprint: they are treated as stale (one warning). Either way
the report says how many distinct configurations, and how many scorings, have met the test
users of this split over all runs.

Writes are atomic: the arrays go to a temp file renamed into place, then the line is
appended with one ``write`` under an exclusive ``flock`` (one line, never half of one).

Reading survives a torn write all the same (a kill or a full disk outside our control, an
edit by hand): a line that is not a complete entry is cut from the ledger and kept aside in
``test_ledger.jsonl.torn`` with a warning, like Optuna's journal; an arrays file that can't be
read is moved aside (``.torn``) with a warning and its configuration and seed are scored again.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from harness.sweep.identity import config_hash

log = logging.getLogger("harness.benchmark.ledger")
LEDGER_FILE = "test_ledger.jsonl"
ARRAYS_DIR = "test_ledger"
# Run options that change nothing about the scores: not part of a configuration's hash.
RUN_OPTIONS = frozenset({"name", "seed", "verbose", "save_path"})
# Packages whose version can change a trained model's scores.
TRAINING_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scipy", "implicit")
_HARNESS = Path(__file__).resolve().parents[1]
# Code a test scoring depends on: every model, the data protocol and the metrics.
CODE_FOLDERS = ("models", "evaluation", "data")


@functools.cache
def code_fingerprint() -> str:
    """sha256 over the harness's model, evaluation and data code and the versions of the
    training-relevant packages: a model fix or an upgrade changes it, so the ledger's stored
    test scores of the old code are not reused next to fresh validation numbers."""
    digest = hashlib.sha256()
    for folder in CODE_FOLDERS:
        for path in sorted((_HARNESS / folder).rglob("*.py")):
            digest.update(str(path.relative_to(_HARNESS)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    for package in TRAINING_PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{package}=={version}\0".encode())
    return digest.hexdigest()


TORN_SUFFIX = ".torn"
_REQUIRED = ("split_fingerprint", "config_hash", "seed", "arrays", "coverage")


def _entry(line: str) -> dict[str, Any] | None:
    """The ledger entry on ``line``, or None when it is torn, garbage or lacks a field."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or any(key not in entry for key in _REQUIRED):
        return None
    return entry


def configuration_hash(model: str, params: Mapping[str, Any], variant: str, ks: tuple) -> str:
    """Hash of what a test scoring depends on, besides split and seed."""
    kept = {k: v for k, v in params.items() if k not in RUN_OPTIONS}
    return config_hash({"model": model, "params": kept, "variant": variant, "ks": list(ks)})


class TestLedger:
    """The ledger under ``results_dir``.

    Args:
        results_dir: folder of ``test_ledger.jsonl``.
        rescore: True = score again even when stored scores exist (each scoring is recorded).
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self, results_dir: Path | str, *, rescore: bool = False, code: str | None = None
    ) -> None:
        self.dir = Path(results_dir)
        self.path = self.dir / LEDGER_FILE
        self.rescore = rescore
        self.code = code if code is not None else code_fingerprint()
        self._warned_unversioned = False
        self._checked: set[str] = set()  # arrays files read back once and found whole

    def entries(self) -> list[dict[str, Any]]:
        """Every entry of the ledger (oldest first); [] when there is none.

        Torn or garbage lines are cut from the file (under the ledger's lock) and appended to
        ``test_ledger.jsonl.torn``, with a warning; the entries before and after them stay.
        """
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        entries, torn = self._parse(raw)
        if torn:
            entries = self._cut_torn_lines()
        return entries

    @staticmethod
    def _parse(raw: bytes) -> tuple[list[dict[str, Any]], list[bytes]]:
        entries, torn = [], []
        for line in raw.splitlines(keepends=True):
            if not line.strip():
                continue
            entry = _entry(line.decode("utf-8", errors="replace"))
            if entry is None or not line.endswith(b"\n"):
                torn.append(line)
            else:
                entries.append(entry)
        return entries, torn

    def _cut_torn_lines(self) -> list[dict[str, Any]]:
        """Rewrite the ledger without its torn lines (kept aside in ``.torn``), locked."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # no append lands between the read and the rewrite
            with open(self.path, "rb") as handle:
                raw = handle.read()
            entries, torn = self._parse(raw)
            if not torn:
                return entries
            aside = self.path.with_name(self.path.name + TORN_SUFFIX)
            with open(aside, "ab") as handle:
                for line in torn:
                    handle.write(line if line.endswith(b"\n") else line + b"\n")
            kept = b"".join(json.dumps(e, sort_keys=True).encode() + b"\n" for e in entries)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                handle.write(kept)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, os.stat(self.path).st_mode & 0o777)
            os.replace(tmp, self.path)
            log.warning(
                "%s: %d torn or unreadable line(s) cut and kept aside in %s; the %d complete "
                "entries are kept (their configurations and seeds are not scored again)",
                self.path,
                len(torn),
                aside,
                len(entries),
            )
            return entries
        finally:
            os.close(fd)

    def _arrays_ok(self, entry: Mapping[str, Any]) -> bool:
        """True when the entry's arrays file exists and reads back whole; a damaged one is
        moved aside with a warning (its configuration and seed are then scored again)."""
        path = self.dir / entry["arrays"]
        if str(path) in self._checked:
            return True
        if not path.exists():
            return False
        try:
            with np.load(path) as data:
                for name in data.files:
                    data[name]
        except Exception as error:  # BadZipFile, EOFError, ValueError, OSError, zlib.error
            aside = path.with_name(path.name + TORN_SUFFIX)
            try:
                os.replace(path, aside)
            except OSError:
                aside = path
            log.warning(
                "%s: cannot read the stored test scores (%s: %s); moved to %s, this "
                "configuration and seed are scored again",
                path,
                type(error).__name__,
                str(error)[:200],
                aside.name,
            )
            return False
        self._checked.add(str(path))
        return True

    def find(self, fingerprint: str, config: str, seed: int) -> dict[str, Any] | None:
        """The latest entry for (split, configuration, seed) made with this code fingerprint
        whose arrays exist, or None (see `stale_reason` for why an older one is not used)."""
        for entry in reversed(self.entries()):
            if (
                (entry["split_fingerprint"], entry["config_hash"], entry["seed"])
                == (fingerprint, config, seed)
                and entry.get("code") == self.code
                and self._arrays_ok(entry)
            ):
                return entry
        return None

    def stale_reason(self, fingerprint: str, config: str, seed: int) -> str | None:
        """Why stored scores of (split, configuration, seed) exist but are not reused: the
        model code or package versions changed, or the entry predates fingerprints; None
        when there is no such entry (or it is current)."""
        if self.find(fingerprint, config, seed) is not None:
            return None
        for entry in reversed(self.entries()):
            if (entry["split_fingerprint"], entry["config_hash"], entry["seed"]) != (
                fingerprint,
                config,
                seed,
            ):
                continue
            if "code" not in entry:
                if not self._warned_unversioned:
                    self._warned_unversioned = True
                    log.warning(
                        "the test ledger %s holds entries without a code fingerprint (from an "
                        "older version): they are treated as stale and scored again",
                        self.path,
                    )
                return "stored by an older harness without a code fingerprint"
            if entry["code"] != self.code:
                return "model code or package versions changed since the stored scoring"
        return None

    def load(self, entry: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], float]:
        """The per-user arrays and the coverage stored for ``entry``."""
        with np.load(self.dir / entry["arrays"]) as data:
            return {k: data[k] for k in data.files}, float(entry["coverage"])

    def meetings(self) -> Counter[tuple[str, str]]:
        """(split fingerprint, configuration hash) -> how many scorings met the test users."""
        return Counter((e["split_fingerprint"], e["config_hash"]) for e in self.entries())

    def exposure(self, fingerprint: str) -> dict[str, int]:
        """How often the test users of split ``fingerprint`` were met over all runs: distinct
        configurations and scorings (every model, variant, seed and code version)."""
        mine = [e for e in self.entries() if e["split_fingerprint"] == fingerprint]
        return {
            "configurations": len({(e["model"], e["config_hash"]) for e in mine}),
            "scorings": len(mine),
        }

    def append(
        self,
        *,
        fingerprint: str,
        config: str,
        model: str,
        variant: str,
        seed: int,
        per_user: Mapping[str, np.ndarray],
        coverage: float,
    ) -> dict[str, Any]:
        """Store one scoring: its arrays first (atomic rename), then its ledger line."""
        self.dir.mkdir(parents=True, exist_ok=True)
        key = f"{fingerprint[:12]}-{config[:16]}-{seed}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"
        arrays = Path(ARRAYS_DIR) / f"{key}.npz"
        (self.dir / ARRAYS_DIR).mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir / ARRAYS_DIR, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez_compressed(handle, **per_user)
            from harness.outputs import give_umask_mode

            give_umask_mode(tmp)  # mkstemp made it 0600: the user's umask decides
            os.replace(tmp, self.dir / arrays)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        entry = {
            "split_fingerprint": fingerprint,
            "config_hash": config,
            "model": model,
            "variant": variant,
            "seed": int(seed),
            "code": self.code,
            "coverage": float(coverage),
            "arrays": str(arrays),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return entry
