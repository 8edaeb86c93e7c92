"""`launch cancel`: stop a sweep's jobs, or one job, and say what the cancel did."""

from __future__ import annotations

import sys
import time

from launcher.commands.picking import confirm_guess, pick
from launcher.rundir import state as js
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import ENDED_STATES, read_state, write_state
from launcher.rundir.sweepdir import read_info, request_cancel, supervisor_alive
from launcher.show.text import counted, plural


def nothing_to_cancel(sweep_id: str, only: str | None, before: dict[str, str]) -> str:
    """Return what `launch cancel` says when every job it names has ended already."""
    if only:
        return f"nothing to cancel: job {only} of {sweep_id} has ended ({before[only]})"
    n = len(before)
    every = "the only job" if n == 1 else f"all {n} jobs"
    return (f"nothing to cancel: {every} of {sweep_id} "
            f"{'has' if n == 1 else 'have'} ended ({counted(before.values())})")


def cancel_summary(sweep_id: str, only: str | None, before: dict[str, str],
                   after: dict[str, str]) -> str:
    """Return what `launch cancel` says it did, from the job states before and after it.

    A job that ended some other way meanwhile (it finished during the grace) is said so.
    """
    live = [j for j, s in before.items() if s not in ENDED_STATES]
    stopped = [j for j in live if after[j] == js.CANCELLED]
    still = [j for j in live if after[j] not in ENDED_STATES]
    other = [after[j] for j in live if j not in stopped and j not in still]
    if only:
        if still:
            return (f"cancelling job {only} of {sweep_id} (it was {before[only]}); it is still "
                    f"stopping (`launch status {sweep_id}` shows it)")
        if other:
            return f"job {only} of {sweep_id} ended {other[0]} before it could be cancelled"
        return f"cancelled job {only} of {sweep_id} (it was {before[only]})"
    running = sum(before[j] == js.RUNNING for j in stopped)
    parts = []
    if running:
        parts.append(f"{running} {'was' if running == 1 else 'were'} running")
    if len(stopped) > running:
        queued = len(stopped) - running
        parts.append(f"{queued} {'was' if queued == 1 else 'were'} queued")
    text = f"cancelled {plural(len(stopped), 'job')} of {sweep_id}"
    text += f" ({', '.join(parts)})" if parts else ""
    ended = [s for j, s in before.items() if j not in live]
    if ended:
        text += f"; {len(ended)} had ended already ({counted(ended)})"
    if other:
        own = "its" if len(other) == 1 else "their"
        text += f"; {len(other)} ended on {own} own meanwhile ({counted(other)})"
    if still:
        text += f"; {len(still)} still stopping (`launch status {sweep_id}` shows them)"
    return text


def states_of(paths: SweepPaths, job_ids: list[str]) -> dict[str, str]:
    """Return job id -> state word of the given jobs."""
    return {j: read_state(paths.job(j)).state for j in job_ids}


def cancel(target: str | None, grace_s: float, yes: bool = False) -> int:
    """Cancel a sweep or one job: SIGTERM to its processes, SIGKILL after grace_s.

    target None is the user's newest sweep. Where the target was guessed (a prefix, or the
    newest), a person at a terminal is asked first unless yes.
    """
    picked = pick(target)
    paths, only = picked.paths, picked.job_id
    sweep_id = paths.sweep_id
    info = read_info(paths)
    job_ids = [only] if only else info.job_ids
    before = states_of(paths, job_ids)
    if all(s in ENDED_STATES for s in before.values()):
        # An ended state is final (a retry goes back to pending first): no mark, no signal.
        print(nothing_to_cancel(sweep_id, only, before))
        return 0
    live = counted(s for s in before.values() if s not in ENDED_STATES)
    what = f"job {only} of {sweep_id}" if only else f"sweep {sweep_id}"
    if not confirm_guess(picked, f"cancel {what} ({live})", yes):
        print("nothing cancelled", file=sys.stderr)
        return 1
    if info.executor == "slurm":
        from launcher.slurm import submit

        return submit.cancel(paths, job_ids if only else None)
    request_cancel(paths, only, grace_s)
    if supervisor_alive(paths):
        # The supervisor sees the request within a second, signals and records the ends.
        wait_for_ended(paths, job_ids, grace_s + 10)
    else:
        from launcher.machine import procs

        found = procs.job_processes(sweep_id, str(paths.root), only)
        procs.stop_processes([p for ps in found.values() for p in ps], grace_s)
        for job_id in job_ids:
            st = read_state(paths.job(job_id))
            if st.state not in ENDED_STATES:
                write_state(paths.job(job_id), st._replace(state=js.CANCELLED,
                                                           ended=time.time()))
    print(cancel_summary(sweep_id, only, before, states_of(paths, job_ids)))
    return 0


def wait_for_ended(paths: SweepPaths, job_ids: list[str], timeout_s: float) -> None:
    """Wait until every job has ended, at most timeout_s (cancel_summary names the rest)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if all(s in ENDED_STATES for s in states_of(paths, job_ids).values()):
            return
        time.sleep(0.1)
