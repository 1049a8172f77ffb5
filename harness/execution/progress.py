"""Plain progress lines for a stage's jobs: a header, then one line per finished job with the
elapsed time and an ETA. Log lines only (no carriage-return bars), so a log file reads as the
console did."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class JobProgress:
    """Counts `total` jobs of a stage and logs one line per finished job.

    Attributes:
        total: Jobs planned.
        done: Jobs finished so far.
    """

    def __init__(
        self, total: int, title: str, *, logger: logging.Logger | None = None, quiet: bool = False
    ) -> None:
        self.total, self.done, self.title, self.quiet = total, 0, title, quiet
        self.log = logger or logging.getLogger("harness.progress")
        self.started = time.monotonic()

    def start(self, where: str) -> None:
        """The header: what runs, how many jobs, where."""
        self.started = time.monotonic()
        self._line(f"{self.title}: {self.total} training run(s) on {where}")

    def tick(self, label: Any = "", n: int = 1) -> None:
        """`n` jobs finished (the last one described by `label`)."""
        self.done += n
        elapsed = time.monotonic() - self.started
        left = max(self.total - self.done, 0)
        eta = f"ETA {_clock(elapsed / self.done * left)}" if self.done and left else "done"
        if self.total and self.done > self.total:
            eta = "beyond the plan"
        text = " ".join(str(part) for part in label) if isinstance(label, tuple) else str(label)
        self._line(f"  [{self.done}/{self.total}] {text}  ({_clock(elapsed)} elapsed, {eta})")

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        if not logging.getLogger().handlers and not self.log.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.log.addHandler(handler)
            self.log.propagate = False
        if self.log.getEffectiveLevel() > logging.INFO:
            self.log.setLevel(logging.INFO)
        self.log.info(text)
