"""Turns between sweeps: a sweep that waits for a GPU says so, and a richer sweep lets it in.

A supervisor wakes the moment its own job ends and would take the freed GPU back before a
sweep started later (another user's, or another of yours) looks again, so the first sweep
on a machine would keep every GPU until its last job. Instead, a sweep whose next job has
waited NOTICE_AFTER_S for GPUs (most waits end sooner, with the next job's end) holds an
flock on `wait.<sweep id>` in the lease directory, with how many GPUs it holds in the file.
A sweep about to take a GPU first looks for such notices: while one comes from a sweep that
holds fewer GPUs than it does, it leaves the GPU free for up to YIELD_S, long enough for the
waiting sweep to see the GPU idle in NVML and lease it. Repeated at each job end, the GPUs
end up split evenly between the sweeps that want them.

A notice is only an announcement: the GPU itself still goes to whoever wins its lease. The
flock makes a notice die with its sweep; the file is removed when the wait ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

from launcher import leases

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
    for slot in leases.read_slots(Path(lock_dir) / n for n in names):
        meta = slot.meta
        if not slot.held or not isinstance(meta.get("since"), (int, float)):
            continue
        out.append(Waiter(str(meta.get("sweep") or slot.path.name[len(PREFIX):]),
                          str(meta.get("user", "?")), float(meta["since"]),
                          int(meta.get("holding") or 0)))
    return out


def rival(waiting: list[Waiter], holding: int, first_seen: dict[tuple[str, float], float],
          now: float) -> Waiter | None:
    """Return the waiting sweep a freed GPU should be left to, or None to take it.

    `holding` is how many GPUs our own sweep holds now; `first_seen` remembers when each
    wait was first given way to, so a waiter that cannot use what is freed (other GPUs in
    its include list, more GPUs per job) costs us at most YIELD_S per wait.
    """
    poorer = sorted((w for w in waiting if w.holding < holding),
                    key=lambda w: (w.holding, w.since))
    for waiter in poorer:
        since = first_seen.setdefault(waiter.key, now)
        if now - since < YIELD_S:
            return waiter
    return None


class Notice:
    """Our own sweep's notice: posted while its next job waits for GPUs, withdrawn after."""

    def __init__(self, lock_dir: Path, sweep_id: str, user: str):
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
            self.lease = leases.try_lock_slot(self.path, meta)  # None: a leftover of ours has it
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
