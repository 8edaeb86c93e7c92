"""GPU memory in the local executor: each job's need, what its runs hold, and out-of-memory.

The supervisor (launcher/local/supervisor.py) asks a `MemoryBook` for a job's need before it
places the job, shows it every NVML look while jobs run, and asks it at a run's end whether
the run died of GPU out-of-memory. The need of a job, best known first:

- raised after its own oom: what it held plus the margin, on a GPU of its own;
- declared: resources.gpu_memory_mib;
- learned: the largest peak a run of its configuration (its spec but the seed) reached,
  once that run ended or its peak held for memory.SETTLE_S, plus resources.gpu_memory_margin;
- unknown: placed as before (an idle GPU, or beside our own jobs by what they use).

Everything it learns is in the jobs' states too (launcher/rundir/state.py: gpu_memory_*),
so a resumed sweep starts from what the last one knew. docs/design.md: GPU memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from launcher.machine import memory, nvml, procs
from launcher.rundir import state as js
from launcher.rundir.state import JobState, OomEnd, Outcome

# A peak is written into the job's state when it grew by this much since the last write.
RECORD_STEP_BYTES = 64 * nvml.MIB


def configuration(spec: Mapping) -> str:
    """Return what jobs of one configuration share: their spec but the seed (and, for a
    command job, the argv its seed is rendered into)."""
    return json.dumps({k: v for k, v in spec.items() if k not in ("seed", "command")},
                      sort_keys=True, default=str)


class MemoryBook:
    """What one sweep knows of its jobs' GPU memory (module docstring)."""

    def __init__(self, specs: Mapping[str, Mapping], declared_mib: int | None, margin: float,
                 oom_retries: int, user: str, sweep_id: str, sweep_root: str,
                 clock: Callable[[], float] = time.monotonic):
        self.config = {job_id: configuration(spec) for job_id, spec in specs.items()}
        self.declared = None if declared_mib is None else declared_mib * nvml.MIB
        self.margin = margin
        self.allowed = oom_retries
        self.user = user
        self.sweep = (sweep_id, sweep_root)
        self.clock = clock
        self.learned: dict[str, int] = {}  # configuration -> need (margin included)
        self.raised: dict[str, int] = {}  # job -> need after its oom
        self.spent: dict[str, int] = {}  # job -> oom retries spent
        self.oom_lines: dict[str, str] = {}  # job -> the oom line it waits with
        self.peaks: dict[str, int] = {}  # job -> its peak, as its state records it
        self.watches: dict[str, memory.Watch] = {}

    def load(self, job_id: str, st: JobState) -> None:
        """Take in what a job's state knows (at the start, and on a resume)."""
        if st.gpu_memory_peak_bytes:
            self.peaks[job_id] = st.gpu_memory_peak_bytes
            if st.state != js.RUNNING:
                self.learn(job_id, st.gpu_memory_peak_bytes)
        if st.oom_retries:
            self.spent[job_id] = st.oom_retries
        if st.gpu_memory_need_bytes and st.oom_retries:
            self.raised[job_id] = st.gpu_memory_need_bytes
            self.learn(job_id, st.gpu_memory_need_bytes, margin=False)
        if st.state == js.OOM and st.reason:
            self.oom_lines[job_id] = st.reason.split("; now ", 1)[0]

    def learn(self, job_id: str, peak_bytes: int, margin: bool = True) -> None:
        need = memory.with_margin(peak_bytes, self.margin) if margin else peak_bytes
        config = self.config.get(job_id)
        if config is not None and need > self.learned.get(config, 0):
            self.learned[config] = need

    def need(self, job_id: str) -> memory.Need:
        """Return what the job's next run needs of a GPU's memory."""
        if job_id in self.raised:
            return memory.Need(self.raised[job_id], alone=True)
        if self.declared is not None:
            return memory.Need(self.declared, alone=bool(self.spent.get(job_id)))
        learned = self.learned.get(self.config.get(job_id, ""))
        return memory.Need(learned, alone=bool(self.spent.get(job_id)))

    # -- while jobs run ---------------------------------------------------------------------
    def started(self, job_id: str, pid: int, uuids: Iterable[str], gpus: str) -> None:
        """Follow a job that just started on these GPUs (none: nothing to follow)."""
        uuids = tuple(uuids)
        if uuids:
            self.watches[job_id] = memory.Watch(job_id, pid, uuids, gpus, self.clock)

    def look(self, snapshot: nvml.Snapshot) -> list[str]:
        """Take in one NVML look; return the jobs whose peak grew enough to be recorded."""
        if not self.watches:
            return []
        memory.observe(self.watches, snapshot, lambda pid: procs.job_of_pid(pid, *self.sweep))
        grown = []
        for job_id, watch in self.watches.items():
            peak = watch.peak_bytes or 0
            if peak >= self.peaks.get(job_id, 0) + RECORD_STEP_BYTES:
                self.peaks[job_id] = peak
                grown.append(job_id)
            if watch.settled():
                self.learn(job_id, peak)
        return grown

    def tend(self, runs: Sequence[Any], snapshot: Callable[[], nvml.Snapshot],
             write: Callable[[str, JobState], None]) -> None:
        """Look at the running jobs' GPU memory: write a peak that grew into the job's state,
        and tell a job's leases what it needs once that is learned, so that jobs packed
        beside it count it (launcher/machine/gpus.py: room_bytes). runs are the
        supervisor's `Running` records."""
        try:
            grown = set(self.look(snapshot()))
        except nvml.NvmlUnavailable:
            return  # placement says so in its wait line; the next look may work
        for run in runs:
            if run.job_id in grown:
                run.state = run.state._replace(gpu_memory_peak_bytes=self.peaks[run.job_id])
                write(run.job_id, run.state)
            promise = self.need(run.job_id).bytes
            if promise != run.promised:
                run.grant.promise(promise)
                run.promised = promise

    # -- at a run's end ---------------------------------------------------------------------
    def oom_end(self, job_id: str, exit_code: int | None, stopped: str | None,
                log_tail: str) -> OomEnd | None:
        """Return what is known of a run's out-of-memory end, None if it did not end so."""
        watch = self.watches.get(job_id)
        if not js.ran_out_of_memory(exit_code, stopped, log_tail):
            return None
        fields = memory.oom_fields(watch, self.need(job_id).bytes, self.margin, self.user)
        return OomEnd(**fields, spent=self.spent.get(job_id, 0), allowed=self.allowed)

    def ended(self, job_id: str, st: JobState, outcome: Outcome,
              oom: OomEnd | None) -> JobState:
        """Return the job's state after a run with what its memory says in it; remember
        what the run taught (its peak; after an oom, its raised need)."""
        watch = self.watches.pop(job_id, None)
        peak = max(self.peaks.get(job_id, 0), (watch.peak_bytes if watch else None) or 0) or None
        if peak:
            self.peaks[job_id] = peak
            self.learn(job_id, peak)
        if oom is not None and outcome.state == js.OOM:
            self.spent[job_id] = oom.spent + 1
            self.oom_lines[job_id] = outcome.reason or js.OOM
            if oom.need_bytes:
                self.raised[job_id] = oom.need_bytes
                self.learn(job_id, oom.need_bytes, margin=False)
        return js.memory_after(st, outcome, oom, peak)

    def waiting(self, job_id: str, st: JobState, reason: str) -> JobState:
        """Return the state of a job that waits for GPUs or CPUs: `waiting` with the reason,
        or, for a job that ran out of memory, still `oom`, its oom line first."""
        line = self.oom_lines.get(job_id)
        if st.state == js.OOM and line:
            return st._replace(reason=f"{line}; now {reason}")
        return st._replace(state=js.WAITING, reason=reason)
