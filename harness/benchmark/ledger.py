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
from importlib import metadata
from collections import Counter
from collections.abc import Mapping
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

    def entries(self) -> list[dict[str, Any]]:
        """Every line of the ledger (oldest first); [] when there is none."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def find(self, fingerprint: str, config: str, seed: int) -> dict[str, Any] | None:
        """The latest entry for (split, configuration, seed) made with this code fingerprint
        whose arrays exist, or None (see `stale_reason` for why an older one is not used)."""
        for entry in reversed(self.entries()):
            if (
                (entry["split_fingerprint"], entry["config_hash"], entry["seed"])
                == (fingerprint, config, seed)
                and entry.get("code") == self.code
                and (self.dir / entry["arrays"]).exists()
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
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return entry
