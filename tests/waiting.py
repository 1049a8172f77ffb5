"""Waiting on another process in tests: poll a condition until it holds, with a generous
deadline that only bounds a hang (it is never a timing the test asserts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
