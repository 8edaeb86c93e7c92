"""`launch ls` and `launch forget`: the user's sweeps, wherever they were started.

The sweeps come from the user's index (launcher/rundir/index.py) and the runs folder here;
`launch ls` reads only their files (no Slurm query, no NVML), newest first. `launch forget`
drops a sweep from the index and, with --delete, removes its folder.
"""

from __future__ import annotations

import os
import sys

from launcher.commands.picking import confirmed, pick
from launcher.errors import UserError
from launcher.rundir import index
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import ENDED_STATES, RUNNING
from launcher.show.text import plural
from launcher.show.views import SHOWN_STATES, SweepView, load_or_say_why


def sweep_state(view: SweepView) -> str:
    """Return one word for where a sweep stands, read from its files alone."""
    if view.supervisor == "unreadable":
        return "unreadable"
    if all(j.state in ENDED_STATES for j in view.jobs):
        return "ended"
    if view.executor == "slurm":
        return "slurm"  # what Slurm says costs a query: `launch status SWEEP` asks
    return "running" if view.supervisor == "running" else "stopped"


def counts_text(view: SweepView) -> str:
    """Return the jobs by state, in status's order: "3 finished, 1 failed"."""
    counts = view.counts()
    return ", ".join(f"{counts[s]} {s}" for s in SHOWN_STATES if s in counts) or "-"


def ls_rows(sweeps: list[SweepPaths]) -> list[str]:
    """Return the table of `launch ls` for sweeps given oldest first: newest first."""
    rows = [("SWEEP", "STATE", "JOBS", "WHERE")]
    for paths in reversed(sweeps):
        view = load_or_say_why(paths)
        rows.append((paths.sweep_id, sweep_state(view),
                     f"{plural(len(view.jobs), 'job')}: {counts_text(view)}",
                     index.where(paths)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[3]])
            for r in rows]


def mine(sweeps: list[SweepPaths]) -> list[SweepPaths]:
    """Return the sweeps whose folder belongs to this user."""
    out = []
    for paths in sweeps:
        try:
            if os.lstat(paths.root).st_uid == os.getuid():
                out.append(paths)
        except OSError:
            continue
    return out


def run_ls() -> int:
    """Return the exit code of `launch ls`: the user's sweeps, newest first."""
    sweeps = mine(index.known_sweeps())
    gone = [e for e in index.entries() if not e.paths.sweep_json.is_file()]
    if not sweeps:
        print("no sweeps of yours (`launch sweep FILE` starts one)")
    else:
        print("\n".join(ls_rows(sweeps)))
    if gone:
        print(f"{plural(len(gone), 'sweep')} in your index whose folder is gone "
              f"(`launch forget {gone[-1].sweep_id}` drops one): "
              + ", ".join(e.sweep_id for e in reversed(gone)), file=sys.stderr)
    return 0


def forget_gone(text: str) -> int | None:
    """Drop index entries whose folder is gone that text names; None when there are none."""
    gone = [e for e in index.entries() if not e.paths.sweep_json.is_file()
            and (e.sweep_id == text or e.sweep_id.startswith(text))]
    if not gone:
        return None
    index.forget({gone[-1].root})
    print(f"forgot {gone[-1].sweep_id} (its folder {gone[-1].root} was gone already)")
    return 0


def run_forget(text: str | None, delete: bool, yes: bool) -> int:
    """Return the exit code of `launch forget`: drop a sweep from the index, maybe delete it."""
    if text and "/" in text:
        raise UserError(f"launch forget takes a sweep, not a job: {text!r}")
    try:
        picked = pick(text)
    except UserError:
        done = forget_gone(text) if text else None
        if done is None:
            raise
        return done
    paths = picked.paths
    root = str(paths.root.absolute())
    if delete:
        return delete_sweep(paths, yes)
    if not index.forget({root}):
        print(f"{paths.sweep_id} is not in your index; it is found in {index.where(paths)} "
              "(--delete removes it)")
        return 0
    print(f"forgot {paths.sweep_id}; its folder stays: {index.where(paths)}")
    return 0


def delete_sweep(paths: SweepPaths, yes: bool) -> int:
    """Remove a sweep's folder and its index entry, after asking on a terminal."""
    import shutil

    view = load_or_say_why(paths)
    running = sum(j.state == RUNNING for j in view.jobs)
    if view.supervisor == "running" or running:
        raise UserError(f"{paths.sweep_id} is running ({plural(running, 'job')}): "
                        f"`launch cancel {paths.sweep_id}` first")
    what = f"{paths.sweep_id} ({plural(len(view.jobs), 'job')}: {counts_text(view)})"
    if not confirmed(f"delete {what} and its folder {paths.root}", yes):
        print("nothing deleted", file=sys.stderr)
        return 1
    shutil.rmtree(paths.root)
    index.forget({str(paths.root.absolute())})
    print(f"deleted {what}: {paths.root}")
    return 0
