"""Run one command per host, all at once, and stop waiting at a deadline.

`run_all` starts every command before it waits for any, feeds each its stdin, and
returns when the last one ends or the deadline passes, whichever comes first: a command still
running then is killed with everything it started (its own process group: an ssh and the
ProxyCommand or ProxyJump ssh it runs), and its reply says it did not end. Nothing here knows
ssh; launcher/hosts/probe.py builds the commands and reads the replies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

# After the kill, how long to wait for the pipes to close. Only a grandchild that left the
# process group can hold them open longer; its reply is then cut short, the deadline is not.
KILL_GRACE_S = 0.2
EXIT_NOT_STARTED = 127  # as a shell says for a command it cannot find


class Reply(NamedTuple):
    """How one command ended: its exit code (None: killed at the deadline) and its output."""

    exit_code: int | None
    stdout: str
    stderr: str


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def _talk(proc: subprocess.Popen, stdin: bytes, deadline: float, clock: Callable[[], float],
          out: dict[int, Reply]) -> None:
    """Feed stdin, read both outputs until the command ends or the deadline; record its Reply."""
    try:
        stdout, stderr = proc.communicate(stdin, timeout=max(0.0, deadline - clock()))
        out[proc.pid] = Reply(proc.returncode, stdout.decode(errors="replace"),
                              stderr.decode(errors="replace"))
        return
    except subprocess.TimeoutExpired:
        _kill_group(proc)
    try:
        stdout, stderr = proc.communicate(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        stdout, stderr = b"", b""
    out[proc.pid] = Reply(None, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


def run_all(commands: Mapping[str, Sequence[str]], stdins: Mapping[str, str], timeout_s: float,
            clock: Callable[[], float] = time.monotonic) -> dict[str, Reply]:
    """Return name -> Reply for every command, each run once with stdins[name], all at once.

    Returns within timeout_s (plus KILL_GRACE_S at most, for killed commands' last output).
    """
    deadline = clock() + timeout_s
    replies: dict[str, Reply] = {}
    procs: dict[str, subprocess.Popen] = {}
    for name, argv in commands.items():
        try:
            procs[name] = subprocess.Popen(list(argv), stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           start_new_session=True)
        except OSError as exc:
            replies[name] = Reply(EXIT_NOT_STARTED, "", f"{argv[0]}: {exc.strerror}")
    by_pid: dict[int, Reply] = {}
    threads = [threading.Thread(target=_talk, daemon=True,
                                args=(proc, stdins.get(name, "").encode(), deadline, clock,
                                      by_pid)) for name, proc in procs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - clock()) + KILL_GRACE_S)
    for name, proc in procs.items():
        reply = by_pid.get(proc.pid)
        if reply is None:  # its thread is still reading from a process that outlived the kill
            _kill_group(proc)
            reply = Reply(None, "", "")
        replies[name] = reply
    return {name: replies[name] for name in commands}
