"""Starting a sweep's supervisor here, detached from the terminal that asked for it."""

from __future__ import annotations

import subprocess
import sys
import time

from launcher.errors import UserError
from launcher.rundir.layout import SweepPaths
from launcher.rundir.sweepdir import read_supervisor

SUPERVISOR_START_S = 60.0  # a safety net: it writes its record within a second or two


def spawn_supervisor(paths: SweepPaths) -> None:
    """Start the sweep's supervisor in its own session; return once it is ready to place jobs,
    or raise the error it stopped on (an unsafe lease directory, a machine without GPUs)."""
    before = read_supervisor(paths)
    with open(paths.supervisor_log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher.local.supervisor", str(paths.root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    deadline = time.time() + SUPERVISOR_START_S
    while time.time() < deadline:
        info = read_supervisor(paths)
        if info and info != before and info.pid == proc.pid and info.ready:
            return
        if proc.poll() is not None:
            info = read_supervisor(paths)
            if info and info.error:  # it said why, in one line
                raise UserError(info.error)
            tail = paths.supervisor_log.read_text()[-2000:]
            raise UserError(f"the supervisor of {paths.sweep_id} exited at once:\n{tail}")
        time.sleep(0.02)
    raise UserError(f"the supervisor of {paths.sweep_id} did not start; see "
                    f"{paths.supervisor_log}")
