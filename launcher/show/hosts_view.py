"""What `launch status --hosts` knows of each host, and the summary line drawn from it.

Each host answers with the JSON of its own `launch status --json` (or, without launch, the
same keys filled from nvidia-smi: launcher/hosts/probe.py). `records` turns that JSON back
into the records plain status renders, so a host's lines read as they do on the host;
`summarize` counts its free GPUs with the policy a sweep of this user would apply there
(machine/gpus.py, defaults), and `best_first` orders hosts for --free and --pick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from launcher.machine.cpus import CpuUse
from launcher.machine.leases import GpuLease
from launcher.machine.nvml import Gpu, GpuProcess, MigDevice, Snapshot
from launcher.rundir.state import FAILED, PENDING, PREEMPTED, RUNNING, TIMEOUT, WAITING
from launcher.show.views import JobView, SweepView

SOURCE_LAUNCH, SOURCE_SMI = "launch", "nvidia-smi"
# What the summary counts as a job that waits (it will run later) and one that failed.
WAITING_STATES = (WAITING, PENDING, PREEMPTED)
FAILED_STATES = (FAILED, TIMEOUT)


class HostReport(NamedTuple):
    """One host's answer: its status JSON, or why there is none."""

    host: str  # the name it was asked by: an ssh alias or host name
    status: dict | None  # the keys of `launch status --json`; None when it did not answer
    error: str | None  # why it did not answer, in words ("timeout after 5 s")
    source: str | None = None  # SOURCE_LAUNCH, SOURCE_SMI (the fallback), None: no answer
    fallback_reason: str | None = None  # why nvidia-smi was asked instead of launch


class HostRecords(NamedTuple):
    """A host's status JSON as the records plain `launch status` renders."""

    snapshot: Snapshot | None
    leases: tuple[GpuLease, ...]
    sweeps: tuple[SweepView, ...]
    cpu_use: CpuUse | None


class HostSummary(NamedTuple):
    """The summary line of one host that answered."""

    free: int  # GPUs (or MIG devices) a job of this user could take now
    total: int
    by_model: tuple[tuple[str, int, int], ...]  # (model, free, total), first seen first
    free_memory_bytes: int
    others_processes: int  # GPU processes of other users (and of owners unknown)
    jobs: tuple[int, int, int] | None  # this user's jobs running, waiting, failed; None: unknown
    sweeps: int | None


def _fields(cls: Any, data: Mapping[str, Any], **given: Any) -> Any:
    """Return a cls record from the keys of data it knows; a key missing reads as its default."""
    defaults = cls._field_defaults
    return cls(**{k: given[k] if k in given else data.get(k, defaults.get(k))
                  for k in cls._fields})


def _processes(items: Any) -> tuple[GpuProcess, ...]:
    return tuple(_fields(GpuProcess, p) for p in items or ())


def _gpu(item: Mapping[str, Any]) -> Gpu:
    migs = tuple(_fields(MigDevice, m, processes=_processes(m.get("processes")))
                 for m in item.get("mig_devices") or ())
    return _fields(Gpu, item, mig_devices=migs, processes=_processes(item.get("processes")),
                   lost=bool(item.get("lost")))


def _sweep(item: Mapping[str, Any]) -> SweepView:
    jobs = tuple(_fields(JobView, j, gpus=tuple(j.get("gpus") or ()),
                         gpu_indices=tuple(j.get("gpu_indices") or ()),
                         params=j.get("params") or {}) for j in item.get("jobs") or ())
    return _fields(SweepView, item, jobs=jobs)


def records(status: Mapping[str, Any]) -> HostRecords:
    """Return the records a host's status JSON describes (keys it lacks read as unknown)."""
    gpus = tuple(_gpu(g) for g in status.get("gpus") or ())
    snapshot = None
    if not status.get("nvml_error"):
        snapshot = Snapshot(host=status.get("host") or "?",
                            driver_version=status.get("driver_version"),
                            cuda_driver_version=status.get("cuda_driver_version"), gpus=gpus)
    leases = tuple(_fields(GpuLease, h) for g in status.get("gpus") or ()
                   for h in g.get("leases") or ())
    cpus = status.get("cpus")
    cpu_use = None
    if isinstance(cpus, Mapping):
        cpu_use = CpuUse(cpus.get("usable") or 0, cpus.get("held") or 0,
                         tuple(sorted((cpus.get("by_user") or {}).items())))
    return HostRecords(snapshot, leases, tuple(_sweep(s) for s in status.get("sweeps") or ()),
                       cpu_use)


def _model(name: str | None) -> str:
    return (name or "?").removeprefix("NVIDIA ")


def _job_counts(sweeps: Sequence[SweepView]) -> tuple[int, int, int]:
    states = [j.state for view in sweeps for j in view.jobs]
    return (states.count(RUNNING), sum(states.count(s) for s in WAITING_STATES),
            sum(states.count(s) for s in FAILED_STATES))


def summarize(report: HostReport) -> HostSummary | None:
    """Return the summary of a host that answered, None for one that did not."""
    if report.status is None:
        return None
    from launcher.machine.gpus import GpuPolicy, pick_gpus, units

    found = records(report.status)
    user = report.status.get("user") or "?"
    by_model: dict[str, list[int]] = {}
    free_uuids: set[str] = set()
    free_memory = others = 0
    if found.snapshot is not None:
        choice = pick_gpus(found.snapshot, found.leases, GpuPolicy(), user)
        free_uuids = set(choice.uuids)
        for gpu, unit in units(found.snapshot):
            # a MIG device counts under its GPU's model; its profile is in the host's block
            mig = unit is not None and ":" in unit.label
            counts = by_model.setdefault(_model(gpu.name) + (" MIG" if mig else ""), [0, 0])
            counts[1] += 1
            if unit is not None and unit.uuid in free_uuids:
                counts[0] += 1
            free_memory += (unit.memory_free_bytes or 0) if unit else 0
        pids = {p.pid for gpu in found.snapshot.gpus
                for p in [*gpu.processes, *(q for m in gpu.mig_devices for q in m.processes)]
                if p.user != user}
        others = len(pids)
    known = report.source == SOURCE_LAUNCH
    return HostSummary(
        free=sum(c[0] for c in by_model.values()), total=sum(c[1] for c in by_model.values()),
        by_model=tuple((m, c[0], c[1]) for m, c in by_model.items()),
        free_memory_bytes=free_memory, others_processes=others,
        jobs=_job_counts(found.sweeps) if known else None,
        sweeps=len(found.sweeps) if known else None)


def best_first(reports: Sequence[HostReport], min_free: int) -> list[tuple[HostReport,
                                                                         HostSummary]]:
    """Return the hosts with at least min_free free GPUs, most free first, then most memory.

    Hosts that tie keep the order they were given in.
    """
    found = [(r, s) for r in reports if (s := summarize(r)) is not None and s.free >= min_free]
    order = {id(r): i for i, r in enumerate(reports)}
    return sorted(found, key=lambda rs: (-rs[1].free, -rs[1].free_memory_bytes, order[id(rs[0])]))
