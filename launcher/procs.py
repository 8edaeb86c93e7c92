"""Small, careful helpers for processes this tool starts: identity and signals."""

from __future__ import annotations

import os
import signal

import psutil


def create_time(pid: int) -> float | None:
    """Return when process pid started (seconds since the epoch), or None if it is gone.

    A zombie counts as gone: it has ended, only its parent has not yet asked how.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def same_process(pid: int, started: float | None) -> bool:
    """Return whether pid is still the process that started at `started` (not a reused pid)."""
    now = create_time(pid)
    return now is not None and started is not None and abs(now - started) < 1.0


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send sig to a job's process group; return False if the group is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
