"""Turns between sweeps: a sweep that waits for a GPU says so, and a richer sweep lets it in.

A supervisor wakes the moment its own job ends and would take the freed GPU back before a
sweep started later (another user's, or another of yours) looks again, so the first sweep
on a machine would keep every GPU until its last job. Instead, a sweep whose next job has
waited NOTICE_AFTER_S for GPUs (most waits end sooner, with the next job's end) holds an
flock on `wait.<sweep id>` in the lease directory, with how many GPUs it holds in the file.
When one of a sweep's jobs frees a GPU, the sweep looks for such notices before it takes a
GPU again: while one comes from a sweep that holds fewer GPUs than it still does (or, like
it, none), it leaves GPUs free for up to YIELD_S, long enough for the waiting sweep to see
the GPU idle in NVML and lease it (class Turns). Repeated at each job end, the GPUs end up
split as evenly as they divide between the sweeps that want them, and two sweeps on one GPU
take turns job by job. Equal holdings otherwise keep what they have: giving way leaves a GPU
idle for a while, and trading places would only repeat that.

A notice is only an announcement: the GPU itself still goes to whoever wins its lease. The
flock makes a notice die with its sweep; the file is removed when the wait ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

from launcher.machine import holders, leases

PREFIX = "wait."
NOTICE_AFTER_S = 1.0  # a sweep posts its notice once it has waited this long
# A waiting sweep needs a few NVML looks (utilisation must stay low in three of them, two
# seconds apart) before it trusts a GPU that was just freed.
YIELD_S = 10.0


class Waiter(NamedTuple):
    """A sweep whose next job waits for GPUs, as its notice says."""

    sweep: str
    user: str
    since: float  # when this wait began (unix time)
    holding: int  # GPUs its running jobs hold

    @property
    def key(self) -> tuple[str, float]:
        """Return what tells one wait from the next wait of the same sweep."""
        return self.sweep, self.since


def notice_path(lock_dir: Path, sweep_id: str) -> Path:
    """Return the notice file of a sweep."""
    return Path(lock_dir) / f"{PREFIX}{sweep_id}"


def waiters(lock_dir: Path, but: str = "") -> list[Waiter]:
    """Return the sweeps that wait for GPUs now (their notice is held), except sweep `but`."""
    try:
        names = [n for n in os.listdir(lock_dir) if n.startswith(PREFIX) and n != PREFIX + but]
    except OSError:
        return []
    out = []
    for name in names:
        # Probed, not looked up in /proc/locks (milliseconds on some kernels): at worst the
        # probe turns the notice's owner away once, and it posts again a second later.
        meta = holders.probe(Path(lock_dir) / name)
        if meta is None or not isinstance(meta.get("since"), (int, float)):
            continue
        out.append(Waiter(str(meta.get("sweep") or name[len(PREFIX):]),
                          str(meta.get("user", "?")), float(meta["since"]),
                          int(meta.get("holding") or 0)))
    return out


class Turns:
    """When our sweep gives way: for YIELD_S after one of its jobs frees a GPU, to a waiting
    sweep that holds fewer GPUs than we still do (or none, like us), and never again to a wait
    that let such a window pass (it cannot use our GPUs: other GPUs in its include list, more
    GPUs per job)."""

    def __init__(self) -> None:
        self.freed_at: float | None = None  # monotonic
        self.gave_way_to: tuple[str, float] | None = None
        self.passed_up: set[tuple[str, float]] = set()

    def freed(self, now: float) -> None:
        """Note that one of our jobs has just freed a GPU: a window to give way opens."""
        self.freed_at = now

    def window_open(self, now: float) -> bool:
        """Return whether a GPU we freed is still within its YIELD_S."""
        if self.freed_at is not None and now - self.freed_at >= YIELD_S:
            if self.gave_way_to is not None:
                self.passed_up.add(self.gave_way_to)
            self.freed_at = self.gave_way_to = None
        return self.freed_at is not None

    def rival(self, waiting: list[Waiter], holding: int, now: float) -> Waiter | None:
        """Return the waiting sweep to leave our freed GPU to, or None to take it ourselves.

        `holding` is how many GPUs our running jobs hold, the freed one no longer counted; a
        waiter holding fewer is let in (or one holding none when we hold none: two sweeps on
        one GPU alternate), the poorest first, then the one waiting longest.
        """
        if not self.window_open(now):
            return None
        poorer = sorted((w for w in waiting
                         if (w.holding < holding or w.holding == holding == 0)
                         and w.key not in self.passed_up),
                        key=lambda w: (w.holding, w.since))
        if not poorer:
            return None
        self.gave_way_to = poorer[0].key
        return poorer[0]


class Notice:
    """Our own sweep's notice: posted while its next job waits for GPUs, withdrawn after."""

    def __init__(self, lock_dir: Path, sweep_id: str, user: str) -> None:
        self.path = notice_path(lock_dir, sweep_id)
        self.sweep_id = sweep_id
        self.user = user
        self.lease: leases.Lease | None = None
        self.holding = -1

    def post(self, holding: int) -> None:
        """Say that we wait, holding `holding` GPUs; a new wait starts a new `since`."""
        if self.lease is None:
            meta = {"sweep": self.sweep_id, "user": self.user, "since": time.time(),
                    "holding": holding}
            try:
                self.lease = leases.try_lock_slot(self.path, meta)  # None: held; try later
            except (OSError, leases.LeaseError):
                return  # a notice is advice: a bad file must not stop the sweep
            self.holding = holding
        elif holding != self.holding:
            self.holding = holding
            self.lease.write_meta({**self.lease.meta, "holding": holding})

    def withdraw(self) -> None:
        """End the wait: remove the file while still holding it, so no reader sees it free."""
        if self.lease is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.lease.release()
        self.lease = None
