"""The GPU memory of a job on a Slurm node: what its processes hold, and its out-of-memory end.

The task (launcher/slurm/task.py) looks every few seconds, where the node's NVML answers, at
the memory its child's process tree holds (launcher/machine/memory.py), so that a run that
dies of GPU out-of-memory can say what it held and the next attempt's need can be written
into the job's state. Slurm allocates the GPUs: the need is recorded, not placed by.
"""

from __future__ import annotations

import time

from launcher.machine import foreign, memory, nvml, procs
from launcher.machine.users import current_user
from launcher.rundir.layout import JobPaths
from launcher.rundir.state import JobState, OomEnd, ran_out_of_memory
from launcher.rundir.sweepdir import SweepInfo


class ChildMemory:
    """Looks at one job's GPU memory on this node."""

    def __init__(self, job: JobPaths, info: SweepInfo):
        self.job = job
        self.info = info
        self.watch: memory.Watch | None = None
        self.nvml_ok = True

    @property
    def peak_bytes(self) -> int | None:
        """Return the most the job's processes held at any look."""
        return self.watch.peak_bytes if self.watch else None

    def look(self, pid: int) -> None:
        """Take one look at what the processes of the job whose main process is pid hold."""
        if not self.nvml_ok:
            return
        try:
            snap = nvml.query()
        except nvml.NvmlUnavailable:
            self.nvml_ok = False  # a node without a driver stays one
            return
        if self.watch is None or self.watch.pid != pid:
            self.watch = memory.Watch(self.job.job_id, pid, None, None, time.monotonic)
        root = str(self.job.sweep.root)
        memory.observe({self.job.job_id: self.watch}, snap,
                       lambda p: procs.job_of_pid(p, self.info.sweep_id, root))

    def oom_end(self, st: JobState, code: int | None, stopped: str | None,
                tail: str) -> OomEnd | None:
        """Return what is known of a run's out-of-memory end, None if it did not end so."""
        if not ran_out_of_memory(code, stopped, tail):
            return None
        margin = foreign.number(self.info.resources.get("gpu_memory_margin"),
                                memory.DEFAULT_MARGIN)
        fields = memory.oom_fields(self.watch, st.gpu_memory_need_bytes, margin or 0.0,
                                   current_user())
        if fields["gpus"] is None and st.gpus:
            fields["gpus"] = ",".join(st.gpus)
        return OomEnd(**fields, spent=st.oom_retries, allowed=self.info.oom_retries)
