"""Where the next job runs: GPUs that NVML says are free and whose lease we win, plus CPUs.

The supervisor asks `Placer.grant(job_id, spec)` for each queued job and gets back either a
Grant (held leases and the job's environment) or the reason the job must wait.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.machine import (
    cpus,
    fairshare,
    gpus,
    house,
    leasedir,
    leases,
    memory,
    nvml,
    ports,
)
from launcher.machine.feasible import Needs, check_devices
from launcher.machine.users import current_user

# A waiting job sees memory freed within one supervisor tick (local/supervisor.py: POLL_S).
SNAPSHOT_MAX_AGE_S = 0.5
SAMPLE_SPACING_S = 2.0  # utilisation samples are taken at least this far apart
UTILIZATION_SAMPLES = 3  # utilisation must be low in this many NVML looks in a row


@dataclass
class Grant:
    """Leases held for one job, and the environment that tells the job what it got."""

    gpu_leases: list[leases.Lease]
    cpu_leases: list[leases.Lease]
    gpu_indices: tuple[int, ...]
    share: cpus.CpuShare
    port_lease: leases.Lease | None = None  # MASTER_PORT of a job of several GPUs

    @property
    def master_port(self) -> int | None:
        """Return the rendezvous port leased for the job, None for a job of one GPU."""
        return None if self.port_lease is None else ports.port_of(self.port_lease)

    @property
    def uuids(self) -> list[str]:
        """Return the GPU (or MIG) UUIDs granted, as the job's CUDA_VISIBLE_DEVICES names them."""
        return [lease.key for lease in self.gpu_leases]

    @property
    def holds(self) -> list[leases.Lease]:
        return self.gpu_leases + self.cpu_leases + ([self.port_lease] if self.port_lease else [])

    def fds(self) -> tuple[int, ...]:
        """Return the lease descriptors the job inherits, so the job holds its own leases."""
        return tuple(fd for lease in self.holds for fd in lease.fds)

    def record(self) -> dict[str, Any]:
        """Return the job-state fields that record the grant (launcher/rundir/state.py)."""
        return {
            "gpus": tuple(self.uuids),
            "gpu_indices": tuple(self.gpu_indices),
            "cpus": self.share.cpus,
            "num_workers": self.share.num_workers,
            "num_threads": self.share.num_threads,
            "master_port": self.master_port,
        }

    def describe(self) -> str:
        where = "on the CPU"
        if self.gpu_indices:
            where = "on GPU " + ",".join(map(str, self.gpu_indices))
        return f"{where}, {self.share.cpus} CPU{'' if self.share.cpus == 1 else 's'}"

    def handed_to(self, pid: int) -> None:
        """Name the job's pid in what status shows of its leases.

        The supervisor keeps its own copies of the descriptors until the job has ended
        whole (local/supervisor.py: a child of the job may hold the GPU after it); the job
        holds its copies too, so the leases outlive a supervisor that dies.
        """
        for lease in self.holds:
            lease.write_meta({**lease.meta, "pid": pid})

    def promise(self, need_bytes: int | None) -> None:
        """Say in the GPU leases' metadata what memory the job needs (learned meanwhile), so
        that jobs packed beside it count it (launcher/machine/gpus.py: room_bytes)."""
        for lease in self.gpu_leases:
            lease.write_meta({**lease.meta, "need_bytes": need_bytes})

    def release(self) -> None:
        """End the leases: the job and everything it started are gone."""
        for lease in self.holds:
            lease.release()


class Placer:
    """Grants GPUs and CPUs to one sweep's jobs, looking at NVML at most every few seconds."""

    def __init__(self, sweep_id: str, needs: Needs,
                 house_rules: Callable[[], house.Caps | str] | None = None):
        self.sweep_id = sweep_id
        self.house = house_rules  # what the house rules say now, or why they cannot
        self.user = current_user()
        self.host = socket.gethostname()
        self.cpu_budget = min(needs.cpu_budget, cpus.machine_cpus())  # a plan made elsewhere
        self.cpus_per_job = min(needs.cpus, self.cpu_budget)
        self.want = needs.gpus
        self.lock_dir = leasedir.lock_dir()
        self.policy = memory.fit_slots(needs.policy, leasedir.slots_per_gpu(self.lock_dir))
        self.policy_now = self.policy  # with the GPUs the house rules reserve now
        self.snapshots: list[nvml.Snapshot] = []
        self.looked_at = 0.0
        self.sampled_at = 0.0
        self.reason: str | None = None
        self.reason_at = 0.0
        self.reason_policy: gpus.GpuPolicy | None = None  # the policy the reason is for
        if self.want and check_devices(needs):
            self.want = 0  # no driver and device: auto -> run on the CPU
        self.turns = fairshare.SweepTurns(self.lock_dir, sweep_id, self.user, self.held)
        self.own: dict[str, tuple[Path, ...]] = {}  # job -> slot files its leases are on
        self.unusable: dict[str, str] = {}  # GPU uuid -> why its lease files are no leases

    def refresh(self) -> None:
        """Forget the cached NVML look, so the next grant looks again (a job just ended)."""
        self.looked_at = 0.0

    def snapshot(self) -> nvml.Snapshot:
        """Return NVML's view, at most SNAPSHOT_MAX_AGE_S old; raises NvmlUnavailable."""
        now = time.monotonic()
        if not self.snapshots or now - self.looked_at > SNAPSHOT_MAX_AGE_S:
            snap = nvml.query()
            # Utilisation must be low in looks spread over time, not in three looks taken
            # within a millisecond after a burst of job ends: replace a too-recent sample.
            recent = self.snapshots and now - self.sampled_at < SAMPLE_SPACING_S
            if recent:
                self.snapshots[0] = snap
            else:
                self.snapshots = [snap, *self.snapshots][:UTILIZATION_SAMPLES]
                self.sampled_at = now
            self.looked_at = now
        return self.snapshots[0]

    def choose(self, held: tuple[leases.GpuLease, ...],
               policy: gpus.GpuPolicy | None = None) -> gpus.GpuChoice:
        return gpus.pick_gpus(self.snapshot(), held, policy or self.policy_now, self.user,
                              self.want, earlier=self.snapshots[1:])

    def wait_reason(self, policy: gpus.GpuPolicy | None = None) -> str:
        """Return why no GPU is free now, looked up at most every SAMPLE_SPACING_S.

        Saying who holds what reads /proc/locks, a millisecond each time: not worth paying
        on every job end just to repeat the same sentence.
        """
        now = time.monotonic()
        policy = policy or self.policy_now
        if self.reason is None or now - self.reason_at > SAMPLE_SPACING_S or \
                policy != self.reason_policy:
            self.reason_policy = policy
            self.reason = self.choose(leases.read_gpu_leases(self.lock_dir), policy).reason()
            self.reason += "".join(f"; {why} ({uuid})" for uuid, why in self.unusable.items())
            self.reason_at = now
        return self.reason

    def meta(self, job_id: str) -> dict[str, Any]:
        return {"user": self.user, "host": self.host, "pid": os.getpid(),
                "sweep": self.sweep_id, "job": job_id, "start": time.time(),
                "jobs_per_gpu": self.policy.jobs_per_gpu}

    def grant(self, job_id: str, spec: Mapping[str, Any],
              need: memory.Need | None = None) -> Grant | str:
        """Return the leases and environment for a job, or the reason it has to wait.

        need is the job's own need of GPU memory (launcher/local/gpumemory.py), when known.
        """
        try:
            return self.try_grant(job_id, spec, need)
        except nvml.NvmlUnavailable as err:
            # A driver hiccup must not take the supervisor, and with it every job, down.
            self.refresh()
            return f"cannot read the GPUs now ({err}); trying again"

    def close(self) -> None:
        """Withdraw our wait notice: the sweep has nothing left to place."""
        self.turns.done_waiting()

    def owned_slots(self) -> set[Path]:
        """Return the slot files our running jobs hold: certain to be taken, never tried."""
        return {path for paths in self.own.values() for path in paths}

    def gpus_held(self) -> int:
        """Return how many GPUs (not job slots on them) our running jobs hold."""
        return len({leases.parse_gpu_slot(p.name)[0] for p in self.owned_slots()
                    if p.name.startswith("gpu.")})

    def cpus_held(self) -> int:
        """Return how many CPU tokens our running jobs hold."""
        return sum(1 for p in self.owned_slots() if p.name.startswith("cpu."))

    def held(self) -> tuple[int, int]:
        """Return (GPUs, CPU tokens) our running jobs hold: what our wait notice says."""
        return self.gpus_held(), self.cpus_held()

    def released(self, job_id: str) -> None:
        """Note that a job's leases are gone (it ended); what it freed opens a turn."""
        gpus_before, cpus_before = self.held()
        freed = self.own.pop(job_id, ())
        gpus_after, cpus_after = self.held()
        self.turns.released(freed, gpus_after < gpus_before, cpus_after < cpus_before)

    def try_grant(self, job_id: str, spec: Mapping[str, Any],
                  need: memory.Need | None = None) -> Grant | str:
        """Return a grant under the house rules in force now (machine/house.py), or why not."""
        caps = self.house() if self.house is not None else house.NO_RULES
        if isinstance(caps, str):
            self.turns.done_waiting()
            return f"the house rules file is broken, so no job starts until it is fixed: {caps}"
        if caps.drain:
            self.turns.done_waiting()
            return f"the box is draining{caps.source('drain')}: no new job starts"
        budget = self.cpu_budget
        if caps.cpu_budget is not None:
            budget = min(caps.cpu_budget, cpus.machine_cpus())
            if self.cpus_per_job > budget:
                return (f"a job needs {self.cpus_per_job} CPUs, but the house CPU budget is "
                        f"{budget}{caps.source('cpu_budget')}")
        self.policy_now = self.policy
        if caps.reserved:
            self.policy_now = dataclasses.replace(self.policy, reserved=caps.reserved)
        if not caps.capped:
            return self.take(job_id, spec, budget, need)
        # Count what the user holds and take more under one lock that every user's
        # supervisor takes: two sweeps placing at once cannot pass the cap between them.
        with house.CountLock(self.lock_dir) as locked:
            if not locked:
                return "waiting for the house lock: another supervisor holds it too long"
            held = house.held_by(self.lock_dir, os.getuid())
            why = house.cap_reason(caps, held, self.want, self.cpus_per_job)
            if why:
                self.turns.done_waiting()  # our own cap: nobody should give way to us
                return why
            grant = self.take(job_id, spec, budget, need)
            if isinstance(grant, Grant) and any(lease.meta_fd is None for lease in grant.holds):
                # A lease without our metadata is not counted: it would pass the cap.
                grant.release()
                self.own.pop(job_id, None)
                return ("cannot write this user's lease metadata (meta/<uid>/ in the lease "
                        "directory), by which the house rules count GPUs and CPUs")
            return grant

    def take(self, job_id: str, spec: Mapping[str, Any], budget: int,
             need: memory.Need | None = None) -> Grant | str:
        """Return a grant of free GPUs and CPU tokens out of `budget`, or why the job waits.

        need is the job's own need of GPU memory (launcher/local/gpumemory.py), when known.
        """
        meta = self.meta(job_id)
        policy = memory.policy_for(self.policy_now, need)  # its need; alone after an oom
        meta.update(need_bytes=memory.need_bytes(policy), jobs_per_gpu=policy.jobs_per_gpu)
        gpu_leases: list[leases.Lease] = []
        indices: tuple[int, ...] = ()
        ours = self.owned_slots()
        if self.want:
            rival = self.turns.rival(fairshare.GPUS, self.gpus_held())
            if rival is not None:
                return (f"leaving a freed GPU to sweep {rival.sweep} of {rival.user}, which "
                        f"waits holding {rival.holding} (this sweep holds {self.gpus_held()})")
            # With one job per GPU, trying the lease is the lease check: reading who holds
            # what (/proc/locks) is only worth it to pack GPUs or to say why a job waits.
            packing = policy.jobs_per_gpu > 1
            choice = self.choose(leases.read_gpu_leases(self.lock_dir) if packing else (), policy)
            got = None
            if choice.ok:
                self.unusable = {}
                got = leases.acquire_gpus(choice.uuids, self.want, policy.jobs_per_gpu,
                                          meta, self.lock_dir, skip=ours,
                                          unusable=self.unusable)
            ahead = self.turns.ahead(self.gpus_held(), len(got)) if got is not None else None
            if ahead is not None:
                for lease in got:
                    lease.release()
                self.turns.waits(fairshare.GPUS)
                return (f"leaving a free GPU to sweep {ahead.sweep} of {ahead.user}, first in "
                        f"line: it waits holding {ahead.holding} (this sweep holds "
                        f"{self.gpus_held()})")
            if got is None:
                self.turns.waits(fairshare.GPUS)
                return self.wait_reason(policy)
            gpu_leases = got
            by_uuid = {u.uuid: u.gpu_index for u in choice.candidates}
            indices = tuple(by_uuid[lease.key] for lease in got)
        rival = self.turns.rival(fairshare.CPUS, self.cpus_held())
        cpu_leases = None if rival else cpus.acquire_cpus(self.cpus_per_job, budget, meta,
                                                          self.lock_dir, skip=ours)
        if cpu_leases is None:
            for lease in gpu_leases:
                lease.release()
            if rival:
                return (f"leaving freed CPUs to sweep {rival.sweep} of {rival.user}, which "
                        f"waits holding {rival.cpus} (this sweep holds {self.cpus_held()})")
            self.turns.waits(fairshare.CPUS)
            use = cpus.cpus_in_use(budget, self.lock_dir)
            budget = min(budget, cpus.machine_cpus())
            # Who holds them, as a GPU's reason names its users: "held by alice 2, bob 1".
            who = f" held by {use.holders()}" if use.by_user else " in use"
            return (f"CPU budget spent: {use.held} of {budget} CPU{'' if budget == 1 else 's'}"
                    f"{who}; a job needs {self.cpus_per_job}")
        port = ports.acquire_port(meta, self.lock_dir, skip=ours) if self.want > 1 else None
        if self.want > 1 and port is None:
            for lease in gpu_leases + cpu_leases:
                lease.release()
            span = ports.port_range()
            return f"no free rendezvous port in {span[0]}-{span[-1]} (all leased or in use)"
        self.turns.granted()
        share = cpus.cpu_share(self.cpus_per_job, bool(gpu_leases), spec)
        grant = Grant(gpu_leases, cpu_leases, indices, share, port)
        self.own[job_id] = tuple(lease.path for lease in grant.holds)
        return grant
