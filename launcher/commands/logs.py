"""`launch logs`: print or follow a sweep's supervisor log or one job's output.

Following is `tail -f` that knows when to stop: a job's log ends when the job reaches an ended
state (a retry goes back to pending first, so an ended state is final for this run); a sweep's
log ends when every job has ended and its supervisor is gone. A supervisor found dead with jobs
still unfinished also stops the follow, since nothing will write to the log until a resume.
"""

from __future__ import annotations

import codecs
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from launcher.commands.picking import pick
from launcher.errors import UserError
from launcher.rundir.layout import SweepPaths
from launcher.rundir.names import split_target
from launcher.rundir.state import ENDED_STATES, read_state
from launcher.rundir.store import tail_offset
from launcher.rundir.sweepdir import read_info, supervisor_alive

POLL_S = 0.2  # pause between reads when the file has nothing new: no busy loop
END_CHECK_S = 1.0  # how often to look at state files while following


@dataclass(frozen=True)
class Target:
    """What `launch logs` shows: a sweep's supervisor log or one job's output."""

    sweep: SweepPaths
    job_id: str | None
    path: Path

    @property
    def sweep_id(self) -> str:
        return self.sweep.sweep_id

    def describe(self) -> str:
        """Return a short name for messages, e.g. "job cifar-.../resnet9-1a2b3c4d"."""
        if self.job_id is None:
            return f"sweep {self.sweep_id}"
        return f"job {self.sweep_id}/{self.job_id}"


def resolve_target(text: str, runs: Path | None = None) -> Target:
    """Return the log file that "SWEEP" or "SWEEP/JOB" (prefixes allowed) names."""
    return target_of(*split_target(text, runs))


def target_of(paths: SweepPaths, job_id: str | None) -> Target:
    """Return the log of a sweep (its supervisor's) or of one of its jobs."""
    if job_id is None:
        return Target(paths, None, paths.supervisor_log)
    return Target(paths, job_id, paths.job(job_id).stdout_log)


def follow_verdict(
    job_state: str | None, all_ended: bool, supervisor: bool | None, executor: str
) -> str | None:
    """Return why following should stop now, or None to keep following.

    job_state is the followed job's state (None when following a sweep); supervisor is
    supervisor_alive's answer (None: no supervisor here, yet or ever).
    """
    if job_state is not None:
        return f"job {job_state}" if job_state in ENDED_STATES else None
    if supervisor is True:
        return None
    if all_ended:
        return "sweep ended"
    if supervisor is False and executor == "local":
        return "supervisor is dead (launch sweep --resume SWEEP continues the sweep)"
    return None


def check_end(target: Target) -> str | None:
    """Return why following target should stop, read from the run directory, or None."""
    if target.job_id is not None:
        state = read_state(target.sweep.job(target.job_id)).state
        return follow_verdict(state, False, None, "local")
    alive = supervisor_alive(target.sweep)
    if alive is True:  # the cheap answer first: no need to read every job's state
        return None
    info = read_info(target.sweep)
    states = [read_state(target.sweep.job(j)).state for j in info.job_ids]
    all_ended = all(s in ENDED_STATES for s in states)
    return follow_verdict(None, all_ended, alive, info.executor)


class Printer:
    """Writes bytes read from a log to stdout as text, never splitting a UTF-8 character."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()


def print_file(path: Path, lines: int | None, printer: Printer) -> int:
    """Return the offset reached after printing the file (or its last `lines` lines)."""
    with open(path, "rb") as f:
        start = 0 if lines is None else tail_offset(f, lines)
        f.seek(start)
        while chunk := f.read(1 << 16):
            printer.write(chunk)
        return f.tell()


class Pace:
    """When a follower looks again: sleep between reads, and a clock for the end checks.

    Tests hand in a sleep that makes the next thing happen instead of waiting for it.
    """

    def __init__(self, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sleep, self.clock = sleep, clock
        self.next_check = 0.0

    def check_due(self) -> bool:
        """Return whether it is time to look at the run directory again (every END_CHECK_S)."""
        now = self.clock()
        if now < self.next_check:
            return False
        self.next_check = now + END_CHECK_S
        return True


def wait_for_file(target: Target, pace: Pace) -> str | None:
    """Return None once target's log exists, or why following stopped before it appeared."""
    what = "job" if target.job_id else "sweep"
    print(f"launch: waiting for {target.path} (the {what} has not written it yet)", file=sys.stderr)
    while not target.path.exists():
        if pace.check_due():
            reason = check_end(target)
            if reason is not None and not target.path.exists():
                return reason
        pace.sleep(POLL_S)
    return None


def follow_log(target: Target, lines: int | None, pace: Pace | None = None) -> str:
    """Return why following ended, after printing the log and everything appended to it."""
    pace = pace or Pace()
    printer = Printer()
    if not target.path.exists():
        reason = wait_for_file(target, pace)
        if reason is not None:
            return reason
        lines = None  # a file that appeared while we waited is new: show all of it
    offset = print_file(target.path, lines, printer)
    with open(target.path, "rb") as f:
        f.seek(offset)
        while True:
            # decide before the last read, so lines written just before the end still show
            reason = check_end(target) if pace.check_due() else None
            if os.fstat(f.fileno()).st_size < f.tell():
                print(f"launch: {target.path} was truncated; reading from its start",
                      file=sys.stderr)
                f.seek(0)
            got = False
            while chunk := f.read(1 << 16):
                printer.write(chunk)
                got = True
            if reason is not None:
                return reason
            if not got:
                pace.sleep(POLL_S)


def run_logs(target: str | None, follow: bool, lines: int | None,
             pace: Pace | None = None) -> int:
    """Return the exit code of `launch logs`: print (or follow) the named log (None: the
    newest sweep's)."""
    if lines is not None and lines < 0:
        raise UserError(f"-n takes a number of lines >= 0, not {lines}")
    picked = pick(target)
    tgt = target_of(picked.paths, picked.job_id)
    if follow:
        try:
            reason = follow_log(tgt, lines, pace)
        except KeyboardInterrupt:
            return 0  # stopping the follow is what Ctrl-C asks for, not an error
        print(f"launch: {tgt.describe()}: {reason}", file=sys.stderr)
        return 0
    if not tgt.path.exists():
        if tgt.job_id is not None:
            state = read_state(tgt.sweep.job(tgt.job_id)).state
            hint = f" (job is {state}; -f waits for it)"
        else:
            hint = " (not started yet, or a Slurm sweep: see launch logs SWEEP/JOB)"
        print(f"launch: no log yet: {tgt.path}{hint}", file=sys.stderr)
        return 1
    print_file(tgt.path, lines, Printer())
    return 0
