"""One style of error for every command: a user mistake is one line and exit status 2.

Every exception a user can cause by what they typed or pointed at (config, data, protocol,
network, paths) derives from `UserError`; anything else is a bug and keeps its traceback
(in full with HYDRA_FULL_ERROR=1, which also shows where a user error was raised). `guarded`
applies that rule around an entry point's work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

from harness.compat.optuna import OPTIMIZE_LOGGER
from harness.secrets import mask_text

T = TypeVar("T")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, the shell's code for Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
MAX_MESSAGE = 4000  # characters of a one-line error


class UserError(Exception):
    """A mistake in the user's input; the message names what is wrong and how to fix it."""


class DataError(UserError, ValueError):
    """The data or protocol settings can't make a split (bad file, bad option, empty data)."""


class DataFileError(UserError, FileNotFoundError):
    """A data file the config names does not exist."""


class DataKeyError(UserError, KeyError):
    """A data archive lacks the expected member."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class DataTypeError(UserError, TypeError):
    """A data or protocol option has the wrong type."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so every Ctrl-C path (trial failed with a reason,
    exports written, resume hint) handles it the same way."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise `Terminated` in the main thread on SIGTERM while the block runs.

    Also keeps interrupts one line: Optuna logs a trial that failed on Ctrl-C or SIGTERM with
    the traceback of where the signal happened to land, which is no bug; the line stays.
    Signal handling is a no-op outside the main thread (handlers can only be installed there).
    """
    optuna_log = logging.getLogger(OPTIMIZE_LOGGER)  # logs the failed trial
    optuna_log.addFilter(_drop_interrupt_traceback)
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        previous = None
    hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_lost_interrupt
    try:
        yield
        raise_if_terminated()  # the signal's exception was swallowed (see raise_if_terminated)
    except KeyboardInterrupt:
        _terminated.clear()  # on its way out: no stale flag for a later sweep in this process
        _redelivered.clear()
        _redelivering.clear()
        raise
    finally:
        sys.unraisablehook = hook
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        optuna_log.removeFilter(_drop_interrupt_traceback)


_redelivered: list[int] = []


def _redeliver_lost_interrupt(unraisable: Any) -> None:
    """An interrupt raised inside a finalizer or weakref callback is "ignored" by Python with
    a printed traceback. Print nothing and deliver SIGTERM again (a few times at most; after
    that the sweep loop's `raise_if_terminated` still stops the sweep)."""
    if not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
        return
    if issubclass(unraisable.exc_type, Terminated) and len(_redelivered) < 3:
        _redelivered.append(1)
        # from another thread, a moment later: the handler must not run inside this hook
        threading.Timer(0.01, _redeliver).start()


_redelivering: list[int] = []


def _redeliver() -> None:
    _redelivering.append(1)
    os.kill(os.getpid(), signal.SIGTERM)


def take_redelivery() -> bool:
    """True (once) for a SIGTERM re-sent by `_redeliver_lost_interrupt`: the first interrupt
    again, whose exception was lost, not a second one (`harness.sweep.shield` counts them)."""
    if not _redelivering:
        return False
    _redelivering.clear()
    return True


_terminated: list[int] = []
_zones: list[bool] = []  # stack: True = raise at once on SIGTERM, False = defer to a check


@contextmanager
def signal_zone(*, raise_at_once: bool) -> Iterator[None]:
    """Where SIGTERM may raise: at once (inside a trial's training), or deferred to the next
    `raise_if_terminated` (inside the sweep loop, where an exception landing in Optuna's
    bookkeeping would corrupt it). Outside any zone it raises at once."""
    _zones.append(raise_at_once)
    try:
        if raise_at_once:
            raise_if_terminated()
        yield
    finally:
        _zones.pop()


def interruptible(func: Callable[..., T]) -> Callable[..., T]:
    """``func`` run in a zone where SIGTERM raises at once (the objective of a trial)."""

    def call(*args: Any, **kwargs: Any) -> T:
        with signal_zone(raise_at_once=True):
            return func(*args, **kwargs)

    return call


def raise_if_terminated() -> None:
    """Raise `Terminated` if SIGTERM arrived but its exception was lost.

    Python runs signal handlers between bytecodes of the main thread, which may be inside a
    finalizer or weakref callback where exceptions are printed and ignored; the sweep loop
    calls this before each trial so such a signal still stops the sweep.
    """
    if _terminated:
        signum = _terminated.pop()
        _terminated.clear()
        raise Terminated(f"terminated by signal {signum}")


def _drop_interrupt_traceback(record: logging.LogRecord) -> bool:
    if record.exc_info and record.exc_info[0] and issubclass(record.exc_info[0], KeyboardInterrupt):
        record.exc_info, record.exc_text = None, None
    return True


def _raise_terminated(signum: int, frame: Any) -> None:
    _terminated.append(signum)  # cleared where the exception is handled, not here: it may be lost
    _redelivering.clear()  # a re-sent one arrives here last (after `InterruptOnce` took it)
    if not _zones or _zones[-1]:
        raise Terminated(f"terminated by signal {signum}")


def user_error_from(error: BaseException) -> UserError | None:
    """A `UserError` for third-party exceptions that are user mistakes, else None.

    OmegaConf's missing mandatory value (`dataset=file` without `dataset.options.path`) and
    pandas' empty file are raised by libraries, not by us.
    """
    if isinstance(error, UserError):
        return error
    from omegaconf.errors import MissingMandatoryValue

    environment = environment_error(error)
    if environment is not None:
        return environment
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or str(error).split(":")[-1].strip()
        return UserError(
            f"{key} is mandatory and has no value: set it on the command line, e.g. {key}=..."
        )
    return None


_FULL_DISK = ("database or disk is full", "no space left")
_READ_ONLY = ("attempt to write a readonly database", "readonly database", "read-only file system")


def environment_error(error: BaseException) -> UserError | None:
    """A `UserError` for a full disk or a folder that can't be written (ENOSPC, EDQUOT, EROFS,
    EACCES, or SQLite's own "database or disk is full" / "readonly database"), else None.
    Finished trials and test scores are stored as they finish, so the fix is to free space
    (or permissions) and rerun."""
    import errno

    text = str(error).lower()
    number = getattr(error, "errno", None)
    where = getattr(error, "filename", None)
    at = f" ({where})" if where else ""
    if number in (errno.ENOSPC, errno.EDQUOT) or any(t in text for t in _FULL_DISK):
        return UserError(
            f"no space left on the device{at}: free some space and rerun the same command "
            "(finished trials and test scores are kept; unfinished ones are run again)."
        )
    if number in (errno.EROFS, errno.EACCES, errno.EPERM) or any(t in text for t in _READ_ONLY):
        return UserError(
            f"cannot write{at}: permission denied or a read-only file system ({error}). Give "
            "writable folders with results_dir=DIR reports_dir=DIR and rerun."
        )
    return None


def check_known_keys(
    group: str, values: Any, valid: Any, error: type[Exception], what: str = "setting"
) -> None:
    """Raise ``error`` naming every key of ``values`` outside ``valid`` (a typo guard).

    The message names each unknown key as ``<group>.<key>``, the closest valid key where one
    is close, and the valid keys, e.g. "unknown sweep setting(s) sweep.n_trails (did you mean
    sweep.n_trials?); valid keys are ...".
    """
    import difflib

    names = sorted(set(valid))
    unknown = sorted(set(values) - set(names))
    if not unknown:
        return
    close = {k: difflib.get_close_matches(k, names, n=1, cutoff=0.6) for k in unknown}
    hints = [f"{group}.{k}" + (f" (did you mean {group}.{close[k][0]}?)" if close[k] else "")
             for k in unknown]  # fmt: skip
    raise error(f"unknown {group} {what}(s) {', '.join(hints)}; valid keys are {', '.join(names)}.")


def fail(command: str, message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print ``<command>: error: <message>`` on one line and exit with ``code``."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    text = mask_text(text)
    if len(text) > MAX_MESSAGE:  # a message quoting a huge value stays readable
        text = f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE:,} more characters cut)"
    print(f"{command}: error: {text}", file=sys.stderr)
    sys.exit(code)


def guarded(command: str, work: Callable[[], T], *, resume_hint: str | None = None) -> T:
    """Run ``work()``; user errors and interrupts end in one line and an exit status.

    Args:
        command: The command's name, the prefix of the message.
        work: The entry point's body.
        resume_hint: Said after an interrupt, e.g. "rerun the same command to resume".

    Returns:
        What ``work`` returns (bugs propagate with their traceback).
    """
    try:
        return work()
    except KeyboardInterrupt as interrupt:
        _ignore_interrupts()  # exiting: another Ctrl-C would only make this line a traceback
        _terminated.clear()
        terminated = isinstance(interrupt, Terminated)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        hint = f"; {resume_hint}" if resume_hint else ""
        print(f"{command}: {what}{hint}.", file=sys.stderr)
        sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    except Exception as error:
        user = user_error_from(error)
        if user is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # a bug, or asked for the full story

        fail(command, str(user) or type(user).__name__)


def _ignore_interrupts() -> None:
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
