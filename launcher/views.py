"""What status and follow show of a sweep and its jobs, read from the run directory.

A job's view joins its state.json with the last line of its metrics.jsonl (epoch, accuracy,
elapsed time and the ETA drawn from them). The records are NamedTuples for the reason the
launcher/nvml.py docstring gives: `launch status` must not pay for importing dataclasses.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

from launcher.rundir import (
    ENDED_STATES,
    read_json,
    read_last_jsonl,
    read_sweep_info,
    supervisor_alive,
    sweep_dir,
)


class JobView(NamedTuple):
    """What status and results show of one job."""

    job_id: str
    params: dict
    state: str
    attempt: int
    runs: int
    gpus: tuple[str, ...]
    gpu_indices: tuple[int, ...]
    cpus: int | None
    epoch: int | None
    epochs: int | None
    val_accuracy: float | None
    elapsed_s: float | None
    eta_s: float | None
    reason: str | None
    exit_code: int | None
    signal: int | None
    slurm_job_id: str | None
    log_tail: str | None = None  # the last lines of a failed run's output, from state.json


class SweepView(NamedTuple):
    """What status shows of one sweep: its plan, its supervisor and its jobs."""

    sweep_id: str
    name: str
    executor: str
    created: float
    user: str
    host: str
    supervisor: str  # running | dead | ended | none
    jobs: tuple[JobView, ...]

    def counts(self) -> dict[str, int]:
        """Return how many jobs are in each state."""
        out: dict[str, int] = {}
        for job in self.jobs:
            out[job.state] = out.get(job.state, 0) + 1
        return out


RETRY_REASON = "retry after"  # a pending job's reason while it waits to run again


def end_reason(exit_code: int | None, sig: int | None) -> str | None:
    """Return how a run ended as a reason: "exit 3", "signal 9 (SIGKILL)"; None if unknown."""
    if sig is not None:
        import signal  # only when a run was killed: status of healthy sweeps skips it

        try:
            return f"signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            return f"signal {sig}"
    return None if exit_code is None else f"exit {exit_code}"


def epoch_eta_s(line: dict) -> float | None:
    """Return the seconds left after a metrics line's epoch, at the pace so far; None if unknown."""
    epoch, epochs, elapsed_s = line.get("epoch"), line.get("epochs"), line.get("elapsed_s")
    if not (epoch and epochs and elapsed_s):
        return None
    return elapsed_s / epoch * (epochs - epoch)


def load_job_view(sweep_path: Path, job_id: str, params: dict, now: float) -> JobView:
    """Return one job's view from its state.json and the last line of its metrics.jsonl."""
    d = sweep_path / "jobs" / job_id
    st = read_json(d / "state.json") or {"state": "pending"}
    state = st.get("state", "pending")
    last = read_last_jsonl(d / "metrics.jsonl") or {}
    started, ended = st.get("started"), st.get("ended")
    elapsed = None
    if started:
        elapsed = (ended or now) - started
    epoch, epochs = last.get("epoch"), last.get("epochs")
    if epochs is None:
        spec = read_json(d / "spec.json") or {}
        epochs = spec.get("epochs") if isinstance(spec.get("epochs"), int) else None
    reason = st.get("reason")
    if not reason and state in ("failed", "timeout"):
        # The local supervisor records only the exit status; say it where a reason goes.
        reason = end_reason(st.get("exit_code"), st.get("signal"))
    return JobView(
        job_id=job_id,
        params=params,
        state=state,
        attempt=st.get("attempt", 0),
        runs=st.get("runs", 0),
        gpus=tuple(st.get("gpus") or ()),
        gpu_indices=tuple(st.get("gpu_indices") or ()),
        cpus=st.get("cpus"),
        epoch=epoch,
        epochs=epochs,
        val_accuracy=last.get("val_accuracy"),
        elapsed_s=elapsed,
        eta_s=epoch_eta_s(last) if state == "running" else None,
        reason=reason,
        exit_code=st.get("exit_code"),
        signal=st.get("signal"),
        slurm_job_id=st.get("slurm_job_id"),
        log_tail=st.get("log_tail"),
    )


def load_sweep_view(sweep_id: str, root: Path | None = None, now: float | None = None) -> SweepView:
    """Return the view of one sweep, read from its run directory."""
    now = time.time() if now is None else now
    path = sweep_dir(sweep_id, root)
    info = read_sweep_info(sweep_id, root)
    jobs = tuple(load_job_view(path, j["id"], j.get("params", {}), now) for j in info["jobs"])
    alive = supervisor_alive(path)
    if info.get("executor", "local") != "local" or alive is None:
        supervisor = "none"
    elif alive:
        supervisor = "running"
    elif all(j.state in ENDED_STATES for j in jobs):
        supervisor = "ended"
    else:
        supervisor = "dead"
    return SweepView(
        sweep_id=sweep_id,
        name=info.get("name", sweep_id),
        executor=info.get("executor", "local"),
        created=info.get("created", 0.0),
        user=info.get("user", "?"),
        host=info.get("host", "?"),
        supervisor=supervisor,
        jobs=jobs,
    )
