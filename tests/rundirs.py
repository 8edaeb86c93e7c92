"""Run directories made by hand for tests: a sweep's plan and specs, and its jobs' states."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from launcher.machine.users import current_user
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import JobState, read_state, write_state
from launcher.rundir.sweepdir import JobEntry, SweepInfo, create_sweep, read_info
from launcher.show.views import SweepView, load_sweep_view


def make_sweep(sweep_id: str, jobs: list[tuple[str, dict, dict]], runs: Path | None = None,
               yaml_text: str = "name: demo\n", **info: Any) -> SweepPaths:
    """Return a new sweep of (job id, params, spec) jobs, with the id given (no suffix).

    info sets fields of the plan (launcher/rundir/sweepdir.py: SweepInfo): name, executor...
    """
    fields = {"name": sweep_id.rsplit("-", 2)[0], "executor": "local", "created": time.time(),
              "user": current_user(), "host": socket.gethostname(), **info}
    plan = SweepInfo(sweep_id=sweep_id, jobs=tuple(JobEntry(j, p) for j, p, _ in jobs), **fields)
    paths = create_sweep(plan, yaml_text, [json.dumps(spec) for _, _, spec in jobs], runs)
    assert paths.sweep_id == sweep_id, paths
    return paths


def set_state(paths: SweepPaths, job_id: str, state: str, **fields: Any) -> JobState:
    """Write a job's state record: `state` and any JobState fields; return the record."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    record = JobState(state=state, **fields)
    write_state(paths.job(job_id), record)
    return record


def state_of(sweep_id: str, job_id: str) -> JobState:
    """Return the state of a job of a sweep under $LAUNCH_RUNS_DIR."""
    return read_state(SweepPaths.of(sweep_id).job(job_id))


def job_dir(sweep_id: str, job_id: str) -> Path:
    """Return the folder of a job of a sweep under $LAUNCH_RUNS_DIR."""
    return SweepPaths.of(sweep_id).job(job_id).dir


def job_ids(sweep_id: str) -> list[str]:
    """Return the job ids of a sweep under $LAUNCH_RUNS_DIR, in plan order."""
    return read_info(SweepPaths.of(sweep_id)).job_ids


def view_of(sweep_id: str) -> SweepView:
    """Return what status shows of a sweep under $LAUNCH_RUNS_DIR."""
    return load_sweep_view(SweepPaths.of(sweep_id))
