"""The machine-wide CPU budget: every job this tool starts draws its CPUs from one pool.

The pool is a set of token files `cpu.<n>` in the lease directory, held with flock exactly
like GPU leases, so two users' sweeps share one budget without a daemon, and a job killed
by any means gives its tokens back. A sweep draws only from tokens 0..cpu_budget-1, so the
machine never has more CPUs in use by this tool than the largest budget any sweep declared.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple

from launcher.machine import foreign, holders, leasedir, leases


def usable_cpus() -> int:
    """Return how many CPUs this process may run on (affinity, cgroup cpusets included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_cpu_budget() -> int:
    """Return the default budget: half the machine's usable CPUs, at least one."""
    return max(1, usable_cpus() // 2)


class CpuShare(NamedTuple):
    """How a job's CPUs are split between DataLoader workers and intra-op threads."""

    cpus: int
    num_workers: int
    num_threads: int


def cpu_share(cpus: int, on_gpu: bool, spec: dict) -> CpuShare:
    """Return the split of a job's CPUs; workers + threads == cpus, always.

    On a GPU the main process mostly waits for the device, so all CPUs but one feed the
    DataLoader. On the CPU the model's math is the work, so threads get every CPU unless the
    spec asks for workers. A `device` loader needs no workers at all.
    """
    assert cpus >= 1, cpus
    asked = spec.get("num_workers")
    if spec.get("loader") == "device":
        workers = 0
    elif isinstance(asked, int) and asked >= 0:
        workers = min(asked, cpus - 1)
    else:
        workers = cpus - 1 if on_gpu else 0
    return CpuShare(cpus=cpus, num_workers=workers, num_threads=cpus - workers)


def machine_cpus() -> int:
    """Return the CPUs of the machine: there is one token per CPU, and no more."""
    return os.cpu_count() or 1


def token_path(lock_dir: Path, n: int) -> Path:
    """Return the path of CPU token n."""
    return lock_dir / f"cpu.{n}"


def acquire_cpus(
    count: int, budget: int, meta: dict, lock_dir: Path | None = None,
    skip: Collection[Path] = (),
) -> list[leases.Lease] | None:
    """Return `count` held CPU tokens out of the first `budget`, or None if too few are free.

    All or nothing: a job never sits on part of its CPUs while waiting for the rest. Token
    files in `skip` (held by the caller's own running jobs) are not tried, nor tokens past
    the machine's CPUs; a token file that cannot be a lease (planted) is passed over.
    """
    budget = min(budget, machine_cpus())
    if not 1 <= count <= budget:
        return None
    lock_dir = lock_dir or leasedir.lock_dir()
    held: list[leases.Lease] = []
    try:
        for n in range(budget):
            path = token_path(lock_dir, n)
            if path in skip:
                continue
            try:
                lease = leases.try_lock_slot(path, meta)
            except leases.Unusable:
                continue
            if lease is not None:
                held.append(lease)
                if len(held) == count:
                    return held
    except BaseException:
        for lease in held:
            lease.release()
        raise
    for lease in held:
        lease.release()
    return None


class CpuUse(NamedTuple):
    """What `launch status` shows of the CPU budget: tokens held now, by whom."""

    usable: int
    held: int
    by_user: tuple[tuple[str, int], ...]

    def describe(self) -> str:
        """Return e.g. "CPUs: 3 held by launch jobs (alice 2, bob 1), 16 usable"."""
        return f"CPUs: {self.held} held by launch jobs" + \
            (f" ({self.holders()})" if self.by_user else "") + f", {self.usable} usable"

    def holders(self) -> str:
        """Return who holds the tokens, most first: "alice 2, bob 1"."""
        ranked = sorted(self.by_user, key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{user} {n}" for user, n in ranked)


def _count(lock_dir: Path, names: list[str], locks: holders.HeldLocks | None) -> CpuUse:
    counts: dict[str, int] = {}
    for slot in holders.read_slots(lock_dir, names, locks):
        if slot.held:
            user = foreign.text(slot.meta.get("user"))
            counts[user] = counts.get(user, 0) + 1
    return CpuUse(usable_cpus(), sum(counts.values()), tuple(sorted(counts.items())))


def cpu_use(lock_dir: Path | None = None, locks: holders.HeldLocks | None = None) -> CpuUse:
    """Return how many CPU tokens are held now on this machine, and by which users."""
    lock_dir = lock_dir or leasedir.lock_dir(create=False)
    try:
        names = [n for n in os.listdir(lock_dir) if n.startswith("cpu.")]
    except OSError:
        names = []
    return _count(lock_dir, names, locks)


def cpus_in_use(budget: int, lock_dir: Path | None = None) -> CpuUse:
    """Return who holds the first `budget` CPU tokens now (the ones a sweep draws on)."""
    lock_dir = lock_dir or leasedir.lock_dir()
    budget = min(budget, machine_cpus())
    return _count(lock_dir, [token_path(lock_dir, n).name for n in range(budget)], None)
