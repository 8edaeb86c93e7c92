"""Following a running sweep in the terminal, without owning it.

The follower only reads the run directory: Ctrl-C, a closed laptop or a dropped SSH
connection end the following and nothing else. It prints a line per event (a job starts,
waits and why, ends and how, with the tail of a failed job's output) and, where the output
is no terminal (a pipe, a log file), a line per finished epoch and, within an epoch, a
progress line per job at most every PROGRESS_EVERY_S. On a terminal the sweep's table is
redrawn below the events instead, so epochs and progress show there without a line each.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Collection, Iterable
from typing import TextIO

from launcher.contract import format_duration as duration
from launcher.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR
from launcher.rundir.layout import JobPaths, SweepPaths
from launcher.rundir.state import ENDED_STATES, OOM, RETRY_REASON
from launcher.rundir.store import read_jsonl
from launcher.show import views
from launcher.show.sweep_table import epoch_cell, percent, render_sweeps
from launcher.show.text import plural

REFRESH_S = 1.0
TAIL_LINES = 5  # of a failed job's output, in the follower's lines; `launch logs` has the rest
ANSI_CODE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ID_WIDTH_MAX = 44  # job ids are padded to line up the events, up to this many columns
PROGRESS_EVERY_S = 30.0  # per job: a 12-job sweep's jobs each write one every 10 s


def follow_sweep(paths: SweepPaths, refresh_s: float = REFRESH_S, out: TextIO | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 finished_before: Collection[str] = (),
                 clock: Callable[[], float] = time.monotonic) -> int:
    """Show the sweep until it ends; return 0 if every job finished, 1 otherwise, 2 when its
    supervisor stopped on a user error, 130 on Ctrl-C.

    finished_before names the jobs a resumed sweep had finished before it started again:
    the caller knows, where the first look cannot tell them from jobs that finished since
    (a quick job, retried and finished before that look). sleep is called between looks
    (tests hand in one that makes the next thing happen); clock spaces the progress lines.
    """
    out = out or sys.stdout
    tty = out.isatty()
    sweep_id = paths.sweep_id
    view = views.load_sweep_view(paths)
    before = [j for j in view.jobs if j.job_id in finished_before and j.state == "finished"]
    out.write(header(view, shown_path(paths.root), len(before)) + "\n")
    out.flush()
    # Jobs a resumed sweep had finished before are counted in the header, not listed again.
    seen = {j.job_id: j for j in before}
    shown_epochs = {j.job_id: j.epoch or 0 for j in before}
    shown_progress: dict[str, tuple] = {}
    frame_lines = 0
    try:
        while True:
            events = changes(view, paths, seen, shown_epochs, progress=not tty)
            events += [] if tty else progress_lines(view, shown_progress, clock())
            ended = all(j.state in ENDED_STATES for j in view.jobs)
            last = ended or view.supervisor == "dead"
            if tty:
                frame_lines = redraw(out, events, view, frame_lines, last)
            elif events:
                out.write("".join(line + "\n" for line in events))
                out.flush()
            if last:
                return summarize(view)
            sleep(refresh_s)
            view = views.load_sweep_view(paths)
    except KeyboardInterrupt:
        print(f"\nstopped following; {sweep_id} keeps running. Look again with "
              f"`launch status {sweep_id}` or `launch logs {sweep_id} -f`.", file=sys.stderr)
        return EXIT_INTERRUPTED


def shown_path(path: os.PathLike) -> str:
    """Return path relative to the working directory when it lies below it, else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else relative


def header(view: views.SweepView, path: str, done: int = 0) -> str:
    """Return the first line: the sweep id, its size (done: how many had finished before),
    its run folder and what Ctrl-C does."""
    size = plural(len(view.jobs), "job")
    size += f" ({done} finished before)" if done else ""
    return f"sweep {view.sweep_id}: {size}, {path}; Ctrl-C stops following, not the sweep"


def changes(view: views.SweepView, paths: SweepPaths, seen: dict[str, views.JobView],
            shown_epochs: dict[str, int], progress: bool) -> list[str]:
    """Return the event lines since the last call, updating seen and shown_epochs.

    With progress, every epoch that finished since is a line (read from its metrics, so
    none is skipped however slowly this is called).
    """
    width = min(ID_WIDTH_MAX, max([len(j.job_id) for j in view.jobs] + [3]))
    stamp = time.strftime("%H:%M:%S")
    lines: list[str] = []
    for job in view.jobs:
        prev = seen.get(job.job_id)
        seen[job.job_id] = job
        start = f"{stamp} {job.job_id:<{width}}  "
        # An epoch line carries the time the epoch ended, not when we happened to look.
        epochs = [f"{time.strftime('%H:%M:%S', time.localtime(t)) if t else stamp} "
                  f"{job.job_id:<{width}}  {text}"
                  for t, text in new_epochs(paths.job(job.job_id), job, shown_epochs)] \
            if progress else []
        events = []
        # All jobs start pending: that is not news, unless it is a retry's wait.
        was = (prev.state, prev.attempt) if prev else \
            ("pending", -1 if is_retry(job) else job.attempt)
        if was != (job.state, job.attempt):
            # A quick retry can go running -> pending -> running between two looks, or all
            # before the first: the attempt number tells, unless its wait was shown already.
            shown = prev is not None and is_retry(prev) and prev.attempt == job.attempt - 1
            if job.state != "pending" and job.attempt > max(1, prev.attempt if prev else 1) \
                    and not shown:
                events.append(start + f"attempt {job.attempt - 1} failed; retrying")
                events += failure_lines(view.sweep_id, job) if job.log_tail else []
            events.append(start + state_text(job))
            if job.state == "failed" or (is_retry(job) and job.log_tail):
                events += failure_lines(view.sweep_id, job)
        # A job's last epochs come before the line that says it ended, its first after it started.
        lines += [*epochs, *events] if job.state in ENDED_STATES else [*events, *epochs]
    return lines


def is_retry(job: views.JobView) -> bool:
    """Return whether a job waits to run again after a failed attempt (max_retries), or
    after running out of GPU memory (oom_retries)."""
    return job.state == OOM or (job.state == "pending" and
                                (job.reason or "").startswith(RETRY_REASON))


def new_epochs(paths: JobPaths, job: views.JobView,
               shown_epochs: dict[str, int]) -> list[tuple[float | None, str]]:
    """Return (time, progress text) of each epoch the job finished since the last call.

    A rerun that went back to an earlier checkpoint (its metrics cut back too) shows the
    epochs it does again.
    """
    done = shown_epochs.get(job.job_id, 0)
    epoch = job.epoch or 0
    if epoch < done:
        shown_epochs[job.job_id] = epoch
        return []
    if epoch == done:
        return []
    shown_epochs[job.job_id] = epoch
    metrics = read_jsonl(paths.metrics_jsonl)
    return [(m.get("time"), epoch_text(m)) for m in metrics
            if done < (m.get("epoch") or 0) <= epoch]


def epoch_text(line: dict) -> str:
    """Return a metrics line as progress: "epoch 3/22  val_acc 61.20%  eta 14m02s"."""
    words = [f"epoch {line.get('epoch')}/{line.get('epochs', '?')}"]
    if line.get("val_accuracy") is not None:
        words.append(f"val_acc {percent(line['val_accuracy'])}")
    eta_s = views.epoch_eta_s(line)
    if eta_s:
        words.append(f"eta {duration(eta_s)}")
    return "  ".join(words)


def progress_lines(view: views.SweepView, shown: dict[str, tuple], now: float,
                   every_s: float = PROGRESS_EVERY_S) -> list[str]:
    """Return a line for each running job whose progress moved since the last look, when its
    last line is every_s old (by the clock that gave now); shown keeps what each job showed.

    Waiting for a move, not printing what was there, keeps each line as fresh as the look.
    """
    width = min(ID_WIDTH_MAX, max([len(j.job_id) for j in view.jobs] + [3]))
    stamp = time.strftime("%H:%M:%S")
    lines = []
    for job in view.jobs:
        if job.state != "running" or job.epoch_fraction is None:
            continue
        where = (job.epoch, job.epoch_fraction)
        printed_s, looked = shown.get(job.job_id, (None, None))
        shown[job.job_id] = (printed_s, where)
        if where == looked or (printed_s is not None and now - printed_s < every_s):
            continue
        shown[job.job_id] = (now, where)
        lines.append(f"{stamp} {job.job_id:<{width}}  {progress_text(job)}")
    return lines


def progress_text(job: views.JobView) -> str:
    """Return a job's progress within its epoch: "epoch 1/2 41%  loss 1.9312  312 img/s
    eta 4m10s"."""
    words = [f"epoch {epoch_cell(job)}"]
    if job.train_loss is not None:
        words.append(f"loss {job.train_loss:.4f}")
    if job.images_per_s is not None:
        words.append(f"{job.images_per_s:.0f} img/s")
    if job.eta_s is not None:
        words.append(f"eta {duration(job.eta_s)}")
    return "  ".join(words)


def state_text(job: views.JobView) -> str:
    """Return a job's state as an event: "running on GPU 0", "failed after 12s: exit 3",
    "oom on GPU 2 at 10.8 GiB (1.1 GiB free: alice's process grew); retry 1/2 waits ..."."""
    if job.state == OOM and (job.reason or "").startswith(OOM):
        return job.reason or OOM  # the oom line says it all, in the words status uses
    text = job.state
    if job.state == "running" and job.gpu_indices:
        text += f" on GPU {','.join(map(str, job.gpu_indices))}"
    if job.state == "running" and job.attempt > 1:
        text += f" (attempt {job.attempt})"
    elif job.state == "running" and job.runs > 1:  # resumed: it continues from a checkpoint
        text += f" (run {job.runs}, from its checkpoint if it wrote one)"
    if job.state in ENDED_STATES and job.elapsed_s is not None:
        text += f" after {duration(job.elapsed_s)}"
    if job.state == "finished" and job.val_accuracy is not None:
        text += f", val_acc {percent(job.val_accuracy)}"
    if job.reason and job.state != "running":
        text += f": {job.reason}"
    return text


def failure_lines(sweep_id: str, job: views.JobView) -> list[str]:
    """Return the last lines of a failed job's output and the command that shows them all."""
    lines = (job.log_tail or "").rstrip("\n").split("\n")  # not splitlines: it splits at \r
    tail = [printable(line) for line in lines[-TAIL_LINES:] if line]
    shown = [f"    | {line}" for line in tail] or ["    (it printed nothing)"]
    return [*shown, f"    all its output: launch logs {sweep_id}/{job.job_id}"]


def printable(line: str) -> str:
    """Return a line of a job's output as a terminal would leave it, without control codes."""
    line = line.rstrip("\r").rsplit("\r", 1)[-1]  # progress bars redraw with carriage returns
    line = ANSI_CODE.sub("", line)  # colours
    return "".join(c for c in line if c.isprintable() or c == "\t")


def frame(view: views.SweepView, columns: int, rows: int, last: bool = False) -> list[str]:
    """Return the live table, cut to the screen: a taller or wider frame cannot be redrawn."""
    lines = render_sweeps([view], None)[:max(rows - 2, 2)]
    if not last:
        lines.append("(Ctrl-C stops following; the sweep keeps running)")
    return [line[:max(columns - 1, 10)] for line in lines]


def redraw(out: TextIO, events: Iterable[str], view: views.SweepView, frame_lines: int,
           last: bool = False) -> int:
    """Replace the last frame by the new events and a new frame; return the frame's height."""
    size = shutil.get_terminal_size()
    lines = frame(view, size.columns, size.lines, last)
    up = f"\r\x1b[{frame_lines}A" if frame_lines else ""
    # The events land where the old frame was and scroll up with the terminal; the frame
    # stays under them and is cleared (cursor up, erase down) before the next.
    out.write(up + "\x1b[J" + "".join(line + "\n" for line in [*events, *lines]))
    out.flush()
    return len(lines)


def summarize(view: views.SweepView) -> int:
    """Print how the sweep ended and what to do next; return the exit status."""
    counts = view.counts()
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if view.supervisor == "dead" and view.error:
        # It stopped on something the user must fix first; resuming as it is would not help.
        print(f"launch: error: {view.error}", file=sys.stderr)
        return EXIT_USER_ERROR
    if view.supervisor == "dead" and any(j.state not in ENDED_STATES for j in view.jobs):
        print(f"the supervisor of {view.sweep_id} died ({text}); "
              f"continue with `launch sweep --resume {view.sweep_id}`", file=sys.stderr)
        return 1
    print(f"sweep {view.sweep_id} ended: {text}", file=sys.stderr)
    if counts.get("finished", 0) == len(view.jobs):
        print(f"results: launch results {view.sweep_id}", file=sys.stderr)
        return 0
    unfinished = len(view.jobs) - counts.get("finished", 0)
    what = "the job that did not finish" if unfinished == 1 else \
        f"the {unfinished} jobs that did not finish"
    print(f"rerun {what}: launch sweep --resume {view.sweep_id}", file=sys.stderr)
    return 1
