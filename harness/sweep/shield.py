"""Cleanup that a second Ctrl-C cannot cut short.

After an interrupt, a sweep fails its running trials and writes its exports. A second Ctrl-C
(or SIGTERM) landing in that cleanup would stop it halfway and leave trials RUNNING. Within
`InterruptOnce` the first SIGINT/SIGTERM acts as it did before (the handler that was installed:
KeyboardInterrupt, or `harness.errors.Terminated`); later ones are only counted, so the cleanup
finishes, and one is raised when the block ends without an exception on its way out. The third
one stops at once, for a cleanup that hangs (e.g. on a database that stopped answering).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from harness.errors import Terminated, take_redelivery

log = logging.getLogger("harness.sweep")
FORCE = 3  # interrupts in one block that stop it at once


class InterruptOnce:
    """Let one SIGINT/SIGTERM through while the block runs and hold the ones after it
    (a no-op outside the main thread, where handlers can't be installed)."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptOnce:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(signum) != signal.SIG_IGN:  # ignored stays ignored
                    self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM and take_redelivery() and self.seen:
            # the first SIGTERM again, re-sent because its exception was lost in a finalizer:
            # raised as the first one, not held as a second
            self.seen.pop()
        self.seen.append(signum)
        if len(self.seen) == 1:  # the first: as before
            previous = self.previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            else:
                raise _interrupt(signum)
            return
        if len(self.seen) >= FORCE:
            self._restore()
            raise _interrupt(signum)
        if len(self.seen) == 2:
            log.warning(
                "interrupted again: still failing the running trials and writing the exports "
                "(interrupt %d more time(s) to stop at once)",
                FORCE - 2,
            )

    def _restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}

    def __exit__(self, kind: Any, _error: Any, _tb: Any) -> None:
        self._restore()
        if kind is None and len(self.seen) > 1:  # held while the first one was handled
            raise _interrupt(self.seen[-1])


def _interrupt(signum: int) -> KeyboardInterrupt:
    if signum == signal.SIGTERM:
        return Terminated(f"terminated by signal {signum}")
    return KeyboardInterrupt()
