"""Which GPUs a job may take: a pure policy over a Snapshot and the leases held now.

NVML decides for people who do not use this tool (their processes, memory, utilisation);
leases decide between users of this tool. A MIG-enabled GPU offers its MIG devices
instead of itself, each with its own UUID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from launcher.machine.gpunames import named
from launcher.machine.leases import GpuLease
from launcher.machine.nvml import MIB, Gpu, GpuProcess, Snapshot, gib


@dataclass(frozen=True)
class GpuPolicy:
    """When a GPU counts as free; defaults suit a shared box."""

    include: tuple[str, ...] = ()  # GPU indices ("2", MIG "0:1") or UUID prefixes; () = all
    exclude: tuple[str, ...] = ()
    reserved: tuple[str, ...] = ()  # the house rules' reserved_gpus (config/rules.py)
    leave_free: int = 0  # GPUs to leave idle for other people
    jobs_per_gpu: int = 1
    job_memory_mib: int | None = None  # what one job needs free: declared, learned or raised
    pack_by_memory: bool = False  # jobs_per_gpu: auto: as many as their needs fit
    max_memory_used_mib: int | None = None  # None: max(512 MiB, 2% of the GPU's memory)
    max_utilization_percent: int = 10
    other_users_block: bool = True  # another user's process makes a GPU busy
    prefer_most_free_memory: bool = True


@dataclass(frozen=True)
class Unit:
    """One thing a job can be given: a whole GPU, or one MIG device of a GPU."""

    label: str  # "2", or "0:1" for MIG device 1 of GPU 0
    gpu_index: int
    uuid: str | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    parent_uuid: str | None  # the physical GPU (utilisation is only known per GPU)
    processes: tuple[GpuProcess, ...]


@dataclass(frozen=True)
class GpuChoice:
    """The policy's answer: usable units in order of preference, and why others are not."""

    count: int
    candidates: tuple[Unit, ...]
    rejected: tuple[tuple[str, str], ...]  # (label, reason)
    need_bytes: int | None = None  # the free memory a job needs on each, when known

    @property
    def ok(self) -> bool:
        """Return whether enough units are free for one job."""
        return len(self.candidates) >= self.count

    @property
    def uuids(self) -> tuple[str, ...]:
        """Return the UUIDs to try to lease, best first (more than count: leasing can race)."""
        return tuple(u.uuid for u in self.candidates if u.uuid)

    def reason(self) -> str:
        """Return why a job waits, e.g. "need 1 GPU, 0 free: GPU 2 used by alice", or with
        its need known "needs 9.1 GiB: GPU 0 has 3.0 GiB free (bob 17.2 GiB)"."""
        noun = "GPU" if self.count == 1 else "GPUs"
        why = "; ".join(r for _, r in self.rejected) or "no GPUs on this machine"
        if self.need_bytes is None:
            return f"need {self.count} {noun}, {len(self.candidates)} free: {why}"
        if self.count == 1:
            return f"needs {gib(self.need_bytes)}: {why}"
        return (f"needs {gib(self.need_bytes)} on each of {self.count} GPUs, "
                f"{len(self.candidates)} have it: {why}")


def units(snapshot: Snapshot) -> list[tuple[Gpu, Unit | None]]:
    """Return every schedulable unit with its GPU; a MIG GPU without devices gives None."""
    out: list[tuple[Gpu, Unit | None]] = []
    for gpu in snapshot.gpus:
        if gpu.mig_mode == 1:
            out += [(gpu, Unit(f"{gpu.index}:{m.index}", gpu.index, m.uuid, m.memory_total_bytes,
                               m.memory_used_bytes, m.memory_free_bytes, gpu.uuid, m.processes))
                    for m in gpu.mig_devices] or [(gpu, None)]
        else:
            out.append((gpu, Unit(str(gpu.index), gpu.index, gpu.uuid, gpu.memory_total_bytes,
                                  gpu.memory_used_bytes, gpu.memory_free_bytes, gpu.uuid,
                                  gpu.processes)))
    return out


def matches(unit: Unit, names: Sequence[str]) -> bool:
    """Return whether a unit is named in names: by index, MIG label or UUID prefix."""
    return named(unit.label, unit.gpu_index, unit.uuid, names)


def _busy_reason(unit: Unit, gpu: Gpu, policy: GpuPolicy, user: str, earlier: Sequence[Snapshot],
                 held: Sequence[GpuLease]) -> str | None:
    """Return why NVML says the unit is in use, or None when it looks free."""
    name = f"GPU {unit.label}"
    packing = bool(held)
    need = _job_memory_bytes(unit, policy, user, packing)
    unknown = policy.pack_by_memory and any(h.need_bytes is None for h in held)
    if packing and (need is None or unknown):
        return f"{name} runs a job of yours whose memory use is not known yet"
    short = _short_of_memory(unit, need, held, user)
    if short:
        return short
    if policy.other_users_block:
        others = sorted({p.user for p in unit.processes if p.user != user and p.user != "?"})
        unknown = [p.pid for p in unit.processes if p.user == "?"]
        if unknown:
            others.append(f"pid {unknown[0]} (owner unknown)")
        if others:
            return f"{name} used by {', '.join(others)}"
    if packing:
        return None  # our own jobs explain the memory and utilisation in use
    used, total = unit.memory_used_bytes, unit.memory_total_bytes
    limit_mib = policy.max_memory_used_mib
    if limit_mib is None:
        limit_mib = max(512, 0.02 * (total or 0) / MIB)
    if used is not None and used >= limit_mib * MIB:
        return f"{name} has {gib(used)} in use"
    util = max([u for u in _utilizations(unit.parent_uuid, gpu, earlier) if u is not None],
               default=None)
    if util is not None and util >= policy.max_utilization_percent:
        return f"{name} busy ({util}% utilisation)"
    return None


def _job_memory_bytes(unit: Unit, policy: GpuPolicy, user: str, packing: bool) -> int | None:
    """Return the memory one job needs: declared, or measured on our jobs already there."""
    if policy.job_memory_mib is not None:
        return policy.job_memory_mib * MIB
    if not packing:
        return None
    ours = [p.memory_used_bytes for p in unit.processes
            if p.user == user and p.memory_used_bytes is not None]
    return max(ours, default=None)


def room_bytes(unit: Unit, held: Sequence[GpuLease]) -> int | None:
    """Return the memory a job placed on unit now could count on: what NVML says is free,
    less what the jobs there were promised and have not taken yet (a job just started has
    allocated nothing); None when NVML does not say."""
    if unit.memory_free_bytes is None:
        return None
    used = {p.pid: p.memory_used_bytes or 0 for p in unit.processes}
    promised = sum(max(0, (h.need_bytes or 0) - used.get(h.pid or 0, 0)) for h in held)
    return unit.memory_free_bytes - promised


def _short_of_memory(unit: Unit, need: int | None, held: Sequence[GpuLease],
                     user: str) -> str | None:
    """Return "GPU 0 has 3.0 GiB free (bob 17.2 GiB)" when a job of need does not fit."""
    room = room_bytes(unit, held)
    if need is None or room is None or room >= need:
        return None
    by_user: dict[str, int] = {}
    for p in unit.processes:
        who = "yours" if p.user == user else p.user
        by_user[who] = by_user.get(who, 0) + (p.memory_used_bytes or 0)
    promised = (unit.memory_free_bytes or 0) - room
    if promised:
        by_user["promised to yours"] = promised
    users = sorted(by_user.items(), key=lambda item: -item[1])
    who = ", ".join(f"{u} {gib(n)}" for u, n in users if n)
    return f"GPU {unit.label} has {gib(max(room, 0))} free" + (f" ({who})" if who else "")


def _utilizations(uuid: str | None, gpu: Gpu, earlier: Sequence[Snapshot]) -> list[int | None]:
    found = [gpu.utilization_gpu_percent]
    for snap in earlier:
        found += [g.utilization_gpu_percent for g in snap.gpus if uuid and g.uuid == uuid]
    return found


def _lease_reason(unit: Unit, held: Sequence[GpuLease], policy: GpuPolicy, user: str) -> str | None:
    foreign = [h for h in held if h.user != user]
    holder = (foreign or list(held) or [None])[0]
    if holder is None:
        return None
    # A GPU is full at the smallest share anyone on it agreed to: packing a second job of
    # ours beside a sweep that asked for the card alone would break that sweep's promise.
    limit = min([policy.jobs_per_gpu, *(h.jobs_per_gpu for h in held)])
    if foreign or len(held) >= limit:
        what = f"{holder.sweep or '?'}/{holder.job or '?'}"
        return f"GPU {unit.label} leased by {holder.user} ({what})"
    return None


def pick_gpus(snapshot: Snapshot, leases: Sequence[GpuLease], policy: GpuPolicy, user: str,
              count: int = 1, earlier: Sequence[Snapshot] = ()) -> GpuChoice:
    """Return the units one job of `user` may lease now, best first, and why others not.

    `earlier` holds previous snapshots: utilisation must be low in every sample. With
    jobs_per_gpu > 1 a GPU already carrying this user's jobs is filled before an idle one
    is taken, and needs only room for job_memory_mib.
    """
    rejected: list[tuple[str, str]] = []
    packing_ok: list[Unit] = []
    idle_ok: list[Unit] = []
    for gpu, unit in units(snapshot):
        label = unit.label if unit else str(gpu.index)
        if unit is None or gpu.lost or not unit.uuid:
            why = f"lost ({gpu.error})" if gpu.lost else \
                "has MIG enabled but no MIG devices" if unit is None else "has no UUID"
            rejected.append((label, f"GPU {label} {why}"))
            continue
        if (policy.include and not matches(unit, policy.include)) or \
                matches(unit, policy.exclude):
            rejected.append((label, f"GPU {label} excluded"))
            continue
        if matches(unit, policy.reserved):
            rejected.append((label, f"GPU {label} reserved by the house rules"))
            continue
        held = [h for h in leases if h.uuid == unit.uuid.replace("/", "_") or h.uuid == unit.uuid]
        why = _lease_reason(unit, held, policy, user) or \
            _busy_reason(unit, gpu, policy, user, earlier, held)
        if why:
            rejected.append((label, why))
        else:
            (packing_ok if held else idle_ok).append(unit)
    if policy.prefer_most_free_memory:
        for group in (packing_ok, idle_ok):
            group.sort(key=lambda u: (-(u.memory_free_bytes or 0), u.gpu_index, u.label))
    allowed = max(0, len(idle_ok) - policy.leave_free)
    for unit in idle_ok[allowed:]:
        rejected.append((unit.label, f"GPU {unit.label} left free for others "
                                     f"(leave_free={policy.leave_free})"))
    need = None if policy.job_memory_mib is None else policy.job_memory_mib * MIB
    return GpuChoice(count, tuple(packing_ok + idle_ok[:allowed]), tuple(rejected), need)
