"""`launch logs`: print or follow a sweep's supervisor.log or one job's stdout.log.

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
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from launcher import rundir
from launcher.errors import UserError

POLL_S = 0.2  # pause between reads when the file has nothing new: no busy loop
END_CHECK_S = 1.0  # how often to look at state files while following
TAIL_BLOCK_BYTES = 8192


@dataclass(frozen=True)
class Target:
    """What `launch logs` shows: a sweep's supervisor log or one job's output."""

    sweep_id: str
    job_id: str | None
    path: Path

    def describe(self) -> str:
        """Return a short name for messages, e.g. "job cifar-.../resnet9-1a2b3c4d"."""
        if self.job_id is None:
            return f"sweep {self.sweep_id}"
        return f"job {self.sweep_id}/{self.job_id}"


def resolve_target(text: str, root: Path | None = None) -> Target:
    """Return the log file that "SWEEP" or "SWEEP/JOB" (prefixes allowed) names."""
    sweep_id, job_id = rundir.split_target(text, root)
    if job_id is None:
        return Target(sweep_id, None, rundir.sweep_dir(sweep_id, root) / "supervisor.log")
    return Target(sweep_id, job_id, rundir.job_dir(sweep_id, job_id, root) / "stdout.log")


def follow_verdict(
    job_state: str | None, all_ended: bool, supervisor: bool | None, executor: str
) -> str | None:
    """Return why following should stop now, or None to keep following.

    job_state is the followed job's state (None when following a sweep); supervisor is
    rundir.supervisor_alive's answer (None: no supervisor here, yet or ever).
    """
    if job_state is not None:
        return f"job {job_state}" if job_state in rundir.ENDED_STATES else None
    if supervisor is True:
        return None
    if all_ended:
        return "sweep ended"
    if supervisor is False and executor == "local":
        return "supervisor is dead (launch sweep --resume SWEEP continues the sweep)"
    return None


def check_end(target: Target, root: Path | None = None) -> str | None:
    """Return why following target should stop, read from the run directory, or None."""
    if target.job_id is not None:
        state = rundir.read_job_state(target.sweep_id, target.job_id, root)["state"]
        return follow_verdict(state, False, None, "local")
    path = rundir.sweep_dir(target.sweep_id, root)
    alive = rundir.supervisor_alive(path)
    if alive is True:  # the cheap answer first: no need to read every job's state
        return None
    info = rundir.read_sweep_info(target.sweep_id, root)
    states = [rundir.read_job_state(target.sweep_id, j["id"], root)["state"] for j in info["jobs"]]
    all_ended = all(s in rundir.ENDED_STATES for s in states)
    return follow_verdict(None, all_ended, alive, info.get("executor", "local"))


def tail_offset(f: BinaryIO, lines: int) -> int:
    """Return the byte offset where the last `lines` lines of an open file begin."""
    end = f.seek(0, os.SEEK_END)
    if lines <= 0:
        return end
    # a final newline ends the last line; it does not start a new one
    f.seek(max(0, end - 1))
    pos = end - 1 if f.read(1) == b"\n" else end
    newlines = 0
    while pos > 0:
        start = max(0, pos - TAIL_BLOCK_BYTES)
        f.seek(start)
        block = f.read(pos - start)
        for i in range(len(block) - 1, -1, -1):
            if block[i] == 0x0A:
                newlines += 1
                if newlines == lines:
                    return start + i + 1
        pos = start
    return 0


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


def wait_for_file(target: Target, root: Path | None) -> str | None:
    """Return None once target's log exists, or why following stopped before it appeared."""
    what = "job" if target.job_id else "sweep"
    print(f"launch: waiting for {target.path} (the {what} has not written it yet)", file=sys.stderr)
    next_check = 0.0
    while not target.path.exists():
        now = time.monotonic()
        if now >= next_check:
            reason = check_end(target, root)
            if reason is not None and not target.path.exists():
                return reason
            next_check = now + END_CHECK_S
        time.sleep(POLL_S)
    return None


def follow_log(target: Target, lines: int | None, root: Path | None = None) -> str:
    """Return why following ended, after printing the log and everything appended to it."""
    printer = Printer()
    if not target.path.exists():
        reason = wait_for_file(target, root)
        if reason is not None:
            return reason
        lines = None  # a file that appeared while we waited is new: show all of it
    offset = print_file(target.path, lines, printer)
    next_check = 0.0
    with open(target.path, "rb") as f:
        f.seek(offset)
        while True:
            reason = None
            now = time.monotonic()
            if now >= next_check:
                # decide before the last read, so lines written just before the end still show
                reason = check_end(target, root)
                next_check = now + END_CHECK_S
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
                time.sleep(POLL_S)


def run_logs(target: str, follow: bool, lines: int | None) -> int:
    """Return the exit code of `launch logs`: print (or follow) the named log."""
    if lines is not None and lines < 0:
        raise UserError(f"-n takes a number of lines >= 0, not {lines}")
    tgt = resolve_target(target)
    if follow:
        try:
            reason = follow_log(tgt, lines)
        except KeyboardInterrupt:
            return 0  # stopping the follow is what Ctrl-C asks for, not an error
        print(f"launch: {tgt.describe()}: {reason}", file=sys.stderr)
        return 0
    if not tgt.path.exists():
        if tgt.job_id is not None:
            state = rundir.read_job_state(tgt.sweep_id, tgt.job_id)["state"]
            hint = f" (job is {state}; -f waits for it)"
        else:
            hint = " (not started yet, or a Slurm sweep: see launch logs SWEEP/JOB)"
        print(f"launch: no log yet: {tgt.path}{hint}", file=sys.stderr)
        return 1
    print_file(tgt.path, lines, Printer())
    return 0


def job_log_tail(job_dir: Path, lines: int = 20) -> str:
    """Return the last lines of a job's stdout.log ("" before it has one), for state.json."""
    try:
        with open(Path(job_dir) / "stdout.log", "rb") as f:
            f.seek(tail_offset(f, lines))
            return f.read().decode(errors="replace").rstrip("\n")
    except FileNotFoundError:
        return ""
