"""House rules as placement applies them: per-user caps counted and taken under one lock.

The rules file (launcher/config/rules.py) says what holds now for a user; this module holds
no opinion on files, only on the machine: how many GPUs and CPU tokens a user's jobs hold,
counted from the lease metadata only that user can write (meta/<uid>/, flocked by the
holder for the lease's life, docs/design.md), and the lock under which every user's
supervisor counts and then takes, so that two sweeps placing at the same instant can never
pass a cap between them.

The lock is an flock on the lease directory itself: it always exists, and after `sudo
launch setup` no user can remove or replace it. It is held for the few milliseconds of a
count and a take; a holder that keeps it longer (a hung or hostile process) makes others
wait, saying who holds it, never block forever.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from launcher.machine import holders

RULES_ENV = "LAUNCH_RULES"
DEFAULT_RULES_PATH = "/etc/launch/rules.yaml"
LOCK_WAIT_S = 2.0  # how long a placement waits for the house lock before it says so


def rules_path() -> Path:
    """Return where the box's house rules are: $LAUNCH_RULES, else /etc/launch/rules.yaml."""
    return Path(os.environ.get(RULES_ENV) or DEFAULT_RULES_PATH)


class Caps(NamedTuple):
    """The house rules in force for one user now (config/rules.py: in_force)."""

    max_gpus: int | None = None  # GPUs the user's jobs may hold at once; None: no cap
    max_cpus: int | None = None  # CPU tokens likewise
    cpu_budget: int | None = None  # the box's budget for every job (overrides a sweep's)
    reserved: tuple[str, ...] = ()  # GPU indices or UUID prefixes never leased
    drain: bool = False  # no new job starts
    where: Mapping[str, str] = {}  # rule -> "rules.yaml:3", for the reasons jobs wait

    @property
    def capped(self) -> bool:
        """Return whether a per-user cap applies (then counting takes the house lock)."""
        return self.max_gpus is not None or self.max_cpus is not None

    def source(self, rule: str) -> str:
        """Return " (rules.yaml:3)" for a rule in force, or "" when its line is unknown."""
        return f" ({self.where[rule]})" if rule in self.where else ""


NO_RULES = Caps()


class Held(NamedTuple):
    """What one user's jobs hold on this machine now."""

    gpus: int  # distinct GPUs (a card shared by two packed jobs counts once)
    cpus: int  # CPU tokens


def held_by(lock_dir: Path, uid: int, locks: holders.HeldLocks | None = None) -> Held:
    """Return the GPUs and CPU tokens that uid's jobs hold, from the user's held metadata."""
    folder = Path(lock_dir) / holders.META_DIR / str(uid)
    try:
        names = os.listdir(folder)
    except OSError:
        return Held(0, 0)
    locks = locks or holders.HeldLocks()
    held = [name for name in names if name.startswith(("gpu.", "cpu."))
            and holders.is_held(folder / name, locks, uid)]
    cards = {name.rpartition(".")[0] for name in held
             if name.startswith("gpu.") and name.rpartition(".")[2].isdigit()}
    return Held(len(cards), sum(1 for name in held if name.startswith("cpu.")))


def cap_reason(caps: Caps, held: Held, want_gpus: int, want_cpus: int) -> str | None:
    """Return why a job of a user holding `held` may not take its GPUs and CPUs, or None."""
    if caps.max_gpus is not None and want_gpus and held.gpus + want_gpus > caps.max_gpus:
        return (f"you hold {_count(held.gpus, 'GPU')} and a job needs {want_gpus} more: the "
                f"house limit is {_count(caps.max_gpus, 'GPU')} per user"
                f"{caps.source('max_gpus_per_user')}")
    if caps.max_cpus is not None and held.cpus + want_cpus > caps.max_cpus:
        return (f"you hold {_count(held.cpus, 'CPU')} and a job needs {want_cpus} more: the "
                f"house limit is {_count(caps.max_cpus, 'CPU')} per user"
                f"{caps.source('max_cpus_per_user')}")
    return None


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("s" if n != 1 else "")


class CountLock:
    """The house lock: held while a user's holdings are counted and new leases taken.

    `with CountLock(lock_dir) as got:` got is False when the lock could not be had within
    LOCK_WAIT_S; the caller then waits and says so. `sleep` and `clock` are for tests.
    """

    def __init__(self, lock_dir: Path, wait_s: float = LOCK_WAIT_S,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lock_dir = Path(lock_dir)
        self.wait_s, self.sleep, self.clock = wait_s, sleep, clock
        self.fd: int | None = None

    def __enter__(self) -> bool:
        try:
            fd = os.open(self.lock_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        deadline = self.clock() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except BlockingIOError:
                if self.clock() >= deadline:
                    os.close(fd)
                    return False
                self.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None
