"""Waiting for events in tests: poll a check until it holds, with a bound so a broken test
fails, naming what it waited for, instead of hanging. The bound is not a speed assumption:
it is far past what any event here takes, even on a busy box."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout_s: float = 120.0,
             poll_s: float = 0.05, log: Path | None = None) -> T:
    """Return check()'s first true value; fail naming `what` (and showing `log`, when it
    exists) if none comes within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            said = log.read_text() if log is not None and log.exists() else ""
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{said}")
        time.sleep(poll_s)
