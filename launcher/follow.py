"""Following a running sweep in the terminal, without owning it.

The follower only reads the run directory: Ctrl-C, a closed laptop or a dropped SSH
connection end the following and nothing else.
"""

from __future__ import annotations

import shutil
import sys
import time

from launcher import rundir, views

REFRESH_S = 1.0


def follow_sweep(sweep_id: str, refresh_s: float = REFRESH_S) -> int:
    """Show the sweep until it ends; return 0 if every job finished, 1 otherwise, 130 on Ctrl-C.

    On a terminal the table is redrawn in place; elsewhere (a pipe, a log file) each job's
    state changes are printed once, as lines.
    """
    from launcher import sweep_table

    tty = sys.stdout.isatty()
    seen: dict[str, str] = {}
    try:
        while True:
            view = views.load_sweep_view(sweep_id)
            if tty:
                # The compact list (finished and pending jobs as counts), cut to the screen:
                # a taller frame would scroll instead of refreshing in place.
                rows = shutil.get_terminal_size().lines - 2
                lines = sweep_table.render_sweeps([view], None)[:max(rows, 3)]
                sys.stdout.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n(Ctrl-C stops "
                                 "following; the sweep keeps running)\n")
                sys.stdout.flush()
            else:
                print_changes(view, seen)
            ended = all(j.state in rundir.ENDED_STATES for j in view.jobs)
            if ended or view.supervisor == "dead":
                return summarize(view)
            time.sleep(refresh_s)
    except KeyboardInterrupt:
        print(f"\nstopped following; {sweep_id} keeps running. Look again with "
              f"`launch status {sweep_id}` or `launch logs {sweep_id} -f`.", file=sys.stderr)
        return 130


def print_changes(view: views.SweepView, seen: dict[str, str]) -> None:
    """Print one line per job whose state changed since the last call."""
    for job in view.jobs:
        if seen.get(job.job_id) != job.state:
            seen[job.job_id] = job.state
            where = f" on GPU {','.join(map(str, job.gpu_indices))}" if job.gpu_indices else ""
            print(f"{time.strftime('%H:%M:%S')} {job.job_id} {job.state}{where}", flush=True)


def summarize(view: views.SweepView) -> int:
    """Print how the sweep ended and what to do next; return the exit status."""
    counts = view.counts()
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if view.supervisor == "dead" and any(j.state not in rundir.ENDED_STATES for j in view.jobs):
        print(f"the supervisor of {view.sweep_id} died ({text}); "
              f"continue with `launch sweep --resume {view.sweep_id}`", file=sys.stderr)
        return 1
    print(f"sweep {view.sweep_id} ended: {text}", file=sys.stderr)
    if counts.get("finished", 0) == len(view.jobs):
        print(f"results: launch results {view.sweep_id}", file=sys.stderr)
        return 0
    print(f"rerun the others: launch sweep --resume {view.sweep_id}", file=sys.stderr)
    return 1
