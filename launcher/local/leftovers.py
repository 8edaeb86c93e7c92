"""What a job leaves behind when its main process ends, and stopping it before the next job.

A job's GPUs and CPUs go to another job only once every process the job started has ended:
a child in a session of its own (setsid) would otherwise keep the GPU busy under a job
marked finished, and one that closed its inherited lease files would keep using the GPU
after another job had leased it. The supervisor keeps its own copies of a job's lease
descriptors until then (launcher/machine/placement.py: Grant) and shows the job `stopping`.
"""

from __future__ import annotations

import os
import signal

from launcher.machine import procs


def leftovers(sweep_id: str, sweep_root: str, job_id: str, main_pid: int) -> list[int]:
    """Return the live processes a job left: those carrying its identity, started after it."""
    return procs.job_processes(sweep_id, sweep_root, job_id, newer_than=main_pid).get(job_id, [])


def group_alive(pgid: int) -> bool:
    """Return whether the job's process group still has a member (the leader is reaped)."""
    # A pid is not reused while a group of that id exists, so this is still the job's group.
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def signal_all(pids: list[int], pgid: int, sig: signal.Signals) -> None:
    """Send sig to the job's group and to each process it left outside the group."""
    procs.signal_group(pgid, sig)
    procs.send(pids, sig)
