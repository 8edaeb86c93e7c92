"""Whether this machine can ever run a sweep's jobs: what each job needs, and the checks made
before a local sweep starts (CPU budget, GPUs there, GPUs that could ever be given).

Busy GPUs are worth waiting for and are placement's business (placement.py); what no state
of the machine could satisfy is a user error now, before anything runs.
"""

from __future__ import annotations

import socket
from typing import NamedTuple

from launcher.errors import UserError
from launcher.machine import cpus, gpus, leasedir, memory, nvml


class Needs(NamedTuple):
    """What each job of a sweep needs of this machine (config/sweepfile.py: Resources.needs)."""

    gpus: int  # per job; 0: a CPU job
    cpus: int  # per job, out of cpu_budget
    cpu_budget: int  # the CPU tokens the sweep draws on
    device: str  # auto: GPUs where the machine has any | cpu | gpu: GPUs or an error
    policy: gpus.GpuPolicy  # when a GPU counts as free
    memory_margin: float = memory.DEFAULT_MARGIN  # a learned need: the peak plus this much


def check_cpu_budget(needs: Needs) -> None:
    """Raise when the CPU budget asks for more CPUs than the machine has: there is one CPU
    token per CPU, and a budget past them would let one sweep hold every token."""
    have = cpus.machine_cpus()
    if needs.cpu_budget > have:
        raise UserError(f"resources.cpu_budget is {needs.cpu_budget}, but this machine has "
                        f"{have} CPUs: the budget is shared by every job of every user here "
                        f"and can be at most {have}")


def check_devices(needs: Needs) -> str | None:
    """Return a note when jobs will run on the CPU for want of GPUs; raise if they cannot."""
    if needs.gpus == 0:
        return None
    room = leasedir.slots_per_gpu(leasedir.lock_dir(create=False))
    if room is not None and needs.policy.jobs_per_gpu > room and \
            not needs.policy.pack_by_memory:  # auto takes the slots there are
        raise UserError(f"resources.jobs_per_gpu is {needs.policy.jobs_per_gpu}, but this "
                        f"machine's lease directory has room for {room} jobs per GPU (the "
                        "admin's `launch setup --slots-per-gpu`)")
    try:
        snap = nvml.query()
        problem = None if snap.gpus else f"no GPUs on {socket.gethostname()}"
    except nvml.NvmlUnavailable as err:
        snap, problem = None, str(err)
    if snap is not None and problem is None:
        check_satisfiable(snap, needs.policy, needs.gpus)
        return None
    if needs.device == "gpu":
        raise UserError(f"{problem}; this sweep needs GPUs (resources.device: gpu). "
                        "Set resources.device: auto to run on the CPU instead")
    return f"{problem}: jobs run on the CPU, as the CPU budget allows"


def check_satisfiable(snap: nvml.Snapshot, policy: gpus.GpuPolicy, want: int) -> list[str]:
    """Raise UserError when no state of the machine could ever give a job its GPUs; return
    warnings for what may change (a GPU named by a UUID this machine does not have now).

    Busy GPUs are worth waiting for; GPUs excluded, left free, missing or too small are not.
    """
    every = [u for _, u in gpus.units(snap) if u is not None and u.uuid]
    warnings = []
    for key, names in (("include_gpus", policy.include), ("exclude_gpus", policy.exclude)):
        for name in names:
            if any(gpus.matches(u, (name,)) for u in every):
                continue
            if name.replace(":", "").isdigit():
                raise UserError(f"resources.{key} names GPU {name}, but this machine has "
                                f"{_gpus_named(every)}")
            warnings.append(f"resources.{key}: no GPU of this machine has UUID {name} now")
    allowed = [u for u in every if (not policy.include or gpus.matches(u, policy.include))
               and not gpus.matches(u, policy.exclude) and not gpus.matches(u, policy.reserved)]
    usable = len(allowed) - policy.leave_free
    if want > usable:
        reserved = " and the house rules' reserved_gpus" if policy.reserved else ""
        raise UserError(
            f"resources.gpus_per_job is {want}, but at most {max(usable, 0)} of this machine's "
            f"{len(every)} GPUs can ever be given ({len(allowed)} after include_gpus and "
            f"exclude_gpus, leave_free={policy.leave_free}{reserved})")
    whole = [u for u in allowed if not u.uuid.startswith("MIG-")]
    if want > 1 and len(whole) - policy.leave_free < want:
        raise UserError(f"resources.gpus_per_job is {want}, but a CUDA process sees only one "
                        f"MIG device and this machine has {len(whole)} GPUs without MIG")
    sizes = [u.memory_total_bytes for u in allowed if u.memory_total_bytes]
    need_mib = policy.job_memory_mib
    if want and need_mib and sizes and need_mib * nvml.MIB > max(sizes):
        raise UserError(f"resources.gpu_memory_mib is {need_mib}, but the largest GPU this "
                        f"sweep may use has {max(sizes) // nvml.MIB} MiB: no job would start")
    return warnings


def _gpus_named(units: list[gpus.Unit]) -> str:
    labels = [u.label for u in units]
    return f"{len(labels)} GPUs ({', '.join(labels)})" if labels else "no GPUs"


def machine_warnings(needs: Needs) -> list[str]:
    """Return what may stop this sweep's jobs on this machine but may also change."""
    if needs.gpus == 0:
        return []
    try:
        return check_satisfiable(nvml.query(), needs.policy, needs.gpus)
    except nvml.NvmlUnavailable:
        return []
