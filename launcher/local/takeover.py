"""Taking a sweep over from a supervisor that died: what it left running, and what ended.

A new supervisor (`launch sweep --resume`) must never run a second copy of a job beside
processes the dead one left, and must not run again a job that ended while nobody watched.
The run directory says what happened; where a job's state file is torn, its own result and
the supervisor's log say it instead.
"""

from __future__ import annotations

import contextlib
import os

from launcher import contract
from launcher.machine import procs
from launcher.rundir import state as js
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import JobState, end_of_run
from launcher.rundir.store import read_json


def left_running(paths: SweepPaths, states: dict[str, JobState]) -> list[int]:
    """Return the live processes of the sweep's jobs that have not ended (a dead supervisor's).

    Jobs are told to die with their supervisor, but their children may linger and still hold
    the job's leases. A job's folder is made just before it starts, so a sweep with none never
    ran a job, even one whose supervisor died before it could record the start.
    """
    ever_started = False
    with contextlib.suppress(OSError), os.scandir(paths.jobs_dir) as entries:
        ever_started = any(entries)
    if not ever_started:
        return []
    left = procs.job_processes(paths.sweep_id, str(paths.root))
    return [pid for job_id, pids in left.items()
            if job_id in states and states[job_id].state not in js.ENDED_STATES for pid in pids]


def known_end(paths: SweepPaths, job_id: str, st: JobState) -> tuple[str, str | None] | None:
    """Return (state, reason) of a job that ended unwatched, or None to queue it again."""
    if st.state == js.STOPPING:  # its main process had ended: its end is known
        outcome = end_of_run(st.exit_code, st.signal, None, 0)
        return outcome.state, outcome.reason
    if st.reason == js.STATE_UNREADABLE and logged_end(paths, job_id) == js.FINISHED:
        return js.FINISHED, (f"finished ({js.STATE_UNREADABLE}; the supervisor's log says "
                             "it finished)")
    result = read_json(paths.job(job_id).result_json)
    if isinstance(result, dict) and result.get("status") == contract.RESULT_FINISHED:
        return js.FINISHED, js.FINISHED_UNSUPERVISED  # its own result says how
    return None


def logged_end(paths: SweepPaths, job_id: str) -> str | None:
    """Return how the supervisor's log last said a job ended ("finished", ...), if it did."""
    try:
        lines = paths.supervisor_log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        words = line.split()
        if len(words) >= 3 and words[2] == job_id and words[1] in js.ENDED_STATES:
            return words[1]
    return None
