"""Waiting on another process in tests: poll a condition until it holds, with a generous
deadline that only bounds a hang (it is never a timing the test asserts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

import sqlalchemy

from harness.sweep.storage import _with_installed_driver

T = TypeVar("T")

DEADLINE = 120.0  # seconds; the wait ends as soon as the condition holds


def until(
    condition: Callable[[], T], what: str, *, deadline: float = DEADLINE, every: float = 0.05
) -> T:
    """The first truthy value of `condition()`, polled every `every` seconds.

    Raises:
        AssertionError: it never held within `deadline` seconds ("gave up waiting for <what>").
    """
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(every)


def tables_ready(url: str) -> bool:
    """The harness has created the study storage, so a poll may open it: opening a SQLite
    file first would create an empty one, which a sweep slowed past its 30 s grace refuses."""
    if url.startswith("sqlite:///"):
        db = Path(unquote(url.removeprefix("sqlite:///")))
        return db.exists() and db.stat().st_size > 0
    engine = sqlalchemy.create_engine(_with_installed_driver(url))
    try:
        with engine.connect() as connection:
            found = connection.execute(sqlalchemy.text("SELECT to_regclass('alembic_version')"))
            if found.scalar() is None:
                return False
            stamped = connection.execute(sqlalchemy.text("SELECT count(*) FROM alembic_version"))
            return bool(stamped.scalar())
    except sqlalchemy.exc.OperationalError:
        return False
    finally:
        engine.dispose()
