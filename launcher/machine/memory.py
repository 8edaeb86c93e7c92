"""GPU memory of running jobs: what each holds (NVML, by the PIDs of its process tree), the
need that comes of it, and who took the memory when one ran out.

NVML lists the processes on each GPU with the memory each holds; a job is its main process
and whatever it started (DataLoader workers, torchrun's ranks, daemons in sessions of their
own), found by PID and, for processes that left the tree, by the job's environment
(launcher/machine/procs.py). A `Watch` follows one running job from look to look: its peak,
what it held and what was free on its GPUs at the last look, and the other processes there,
so that an out-of-memory end can say whose process grew. docs/design.md: GPU memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

from launcher.machine import procs
from launcher.machine.gpus import GpuPolicy, units
from launcher.machine.nvml import MIB, GpuProcess, Snapshot

DEFAULT_MARGIN = 0.1  # resources.gpu_memory_margin: a need is a peak plus 10%
# A peak that has not grown for this long is what the job needs (its first steps allocate
# what later steps reuse); an ended run's peak is known at once.
SETTLE_S = 60.0


class Need(NamedTuple):
    """What one job needs of a GPU's memory for its next run."""

    bytes: int | None = None  # free memory it needs; None: not known yet
    alone: bool = False  # a GPU of its own, whatever jobs_per_gpu says (it ran out before)


def with_margin(n_bytes: int, margin: float) -> int:
    """Return n_bytes plus the margin (a fraction: 0.1 is 10%), whole MiB up."""
    return math.ceil(n_bytes * (1 + margin) / MIB) * MIB


def policy_for(policy: GpuPolicy, need: Need | None) -> GpuPolicy:
    """Return the GPU policy for one job of a sweep's policy: its own need, and a card of its
    own when it must not be packed again."""
    if need is None or (need.bytes is None and not need.alone):
        return policy
    changes: dict = {}
    if need.bytes is not None:
        changes["job_memory_mib"] = max(math.ceil(need.bytes / MIB),
                                        policy.job_memory_mib or 0)
    if need.alone:
        changes.update(jobs_per_gpu=1, pack_by_memory=False)
    return dataclasses.replace(policy, **changes)


def need_bytes(policy: GpuPolicy) -> int | None:
    """Return the memory a job placed under policy is promised (what its lease says)."""
    return None if policy.job_memory_mib is None else policy.job_memory_mib * MIB


def fit_slots(policy: GpuPolicy, room: int | None) -> GpuPolicy:
    """Return policy with jobs_per_gpu: auto held to the slot files a protected lease
    directory has (room; None: as many as we make)."""
    if not policy.pack_by_memory or room is None or room >= policy.jobs_per_gpu:
        return policy
    return dataclasses.replace(policy, jobs_per_gpu=max(room, 1))


def owners(snapshot: Snapshot, roots: Mapping[int, str],
           job_of: Callable[[int], str | None]) -> dict[int, str]:
    """Return the job of each GPU process that belongs to one: its main process (roots: pid ->
    job), a descendant of one, or a process whose environment names the job (job_of)."""
    found: dict[int, str] = {}
    for _, unit in units(snapshot):
        for proc in unit.processes if unit else ():
            if proc.pid in found:
                continue
            job = roots.get(proc.pid) or _ancestor_job(proc.pid, roots) or job_of(proc.pid)
            if job is not None:
                found[proc.pid] = job
    return found


def _ancestor_job(pid: int, roots: Mapping[int, str]) -> str | None:
    seen = 0
    while pid > 1 and seen < 64:  # a chain longer than that is not a job's
        pid = procs.parent(pid) or 0
        if pid in roots:
            return roots[pid]
        seen += 1
    return None


class Look(NamedTuple):
    """One look at a job's GPUs: its memory, the free memory, the other processes there."""

    held_bytes: int
    free_bytes: int | None  # the least free on any of its GPUs
    others: tuple[GpuProcess, ...]
    labels: tuple[str, ...] = ()  # its GPUs as status numbers them


def look_at(snapshot: Snapshot, uuids: Collection[str] | None,
            pids: Collection[int]) -> Look | None:
    """Return what a job whose processes are pids holds on its GPUs (uuids; None: those its
    processes are on), or None when NVML shows none of them."""
    held, frees, others, labels = 0, [], [], []
    for _, unit in units(snapshot):
        if unit is None:
            continue
        if uuids is None and not any(p.pid in pids for p in unit.processes):
            continue
        if uuids is not None and unit.uuid not in uuids:
            continue
        labels.append(unit.label)
        if unit.memory_free_bytes is not None:
            frees.append(unit.memory_free_bytes)
        for proc in unit.processes:
            if proc.pid in pids:
                held += proc.memory_used_bytes or 0
            else:
                others.append(proc)
    if not labels:
        return None
    return Look(held, min(frees) if frees else None, tuple(others), tuple(labels))


class Watch:
    """One running job's memory, look after look (a peak, the last look, the first one)."""

    def __init__(self, job_id: str, pid: int, uuids: Collection[str] | None, gpus: str | None,
                 clock: Callable[[], float]):
        self.job_id = job_id
        self.pid = pid
        self.uuids = None if uuids is None else frozenset(uuids)  # None: wherever it is
        self.gpus = gpus  # as status numbers them: "2", "0,1"; None: not known
        self.clock = clock
        self.peak_bytes: int | None = None
        self.grew_at = clock()
        self.last: Look | None = None
        self.first_others: dict[int, int] | None = None  # pid -> bytes, at the first look

    def see(self, look: Look) -> bool:
        """Take in one look; return whether the peak grew."""
        if self.first_others is None:
            self.first_others = {p.pid: p.memory_used_bytes or 0 for p in look.others}
        self.last = look
        if look.held_bytes and look.held_bytes > (self.peak_bytes or 0):
            self.peak_bytes = look.held_bytes
            self.grew_at = self.clock()
            return True
        return False

    def settled(self) -> bool:
        """Return whether the peak has held long enough to be the job's need."""
        return self.peak_bytes is not None and self.clock() - self.grew_at >= SETTLE_S

    def cause(self, user: str) -> str | None:
        """Return whose process took the memory since the job's first look: "alice's
        process grew", "bob's process appeared"; None when no other process grew."""
        if self.last is None or self.first_others is None:
            return None
        best, grown = None, 0
        for proc in self.last.others:
            before = self.first_others.get(proc.pid)
            more = (proc.memory_used_bytes or 0) - (before or 0)
            if more > grown:
                best, grown = (proc, before is not None), more
        if best is None:
            return None
        proc, was_there = best
        whose = "your" if proc.user == user else f"{proc.user}'s"
        return f"{whose} process {'grew' if was_there else 'appeared'}"


def observe(watches: Mapping[str, Watch], snapshot: Snapshot,
            job_of: Callable[[int], str | None]) -> list[str]:
    """Show every watch (by job) what one NVML look says of its job; return the jobs whose
    peak grew. job_of names the job of a process by its environment (procs.job_of_pid)."""
    owner = owners(snapshot, {w.pid: job_id for job_id, w in watches.items()}, job_of)
    grew = []
    for job_id, watch in watches.items():
        pids = {pid for pid, job in owner.items() if job == job_id} | {watch.pid}
        seen = look_at(snapshot, watch.uuids, pids)
        if seen is not None and watch.see(seen):
            grew.append(job_id)
    return grew


def oom_fields(watch: Watch | None, need_bytes: int | None, margin: float,
               user: str) -> dict[str, Any]:
    """Return what a watch knows of a run that ran out of memory, as the fields of the job
    state's OomEnd (launcher/rundir/state.py): where, what it held, what was free, who took
    the memory, and what its next run needs: the most it held (or was promised), plus margin.
    """
    last = watch.last if watch else None
    held = last.held_bytes if last and last.held_bytes else None
    base = max(held or 0, (watch.peak_bytes if watch else None) or 0, need_bytes or 0)
    gpus = (watch.gpus or ",".join(last.labels) or None) if watch and last else \
        (watch.gpus if watch else None)
    return {"gpus": gpus, "held_bytes": held,
            "free_bytes": last.free_bytes if last else None,
            "cause": watch.cause(user) if watch else None,
            "need_bytes": with_margin(base, margin) if base else None}
