"""What status and follow show of a sweep and its jobs, read from the run directory.

A job's view joins its state with the last line of its metrics (epoch, accuracy, elapsed
time and the ETA drawn from them) and, while it runs, with its progress within the epoch.
The records are NamedTuples for the reason launcher/machine/nvml.py gives: `launch status`
must not pay for importing dataclasses.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

from launcher.rundir.layout import JobPaths, SweepPaths
from launcher.rundir.state import (
    ENDED_STATES,
    FAILED,
    RUNNING,
    STATES,
    STOPPING,
    TIMEOUT,
    end_reason,
    read_state,
)
from launcher.rundir.store import read_json, read_last_jsonl
from launcher.rundir.sweepdir import read_info, read_supervisor, supervisor_alive


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
    log_tail: str | None = None  # the last lines of a failed run's output, from its state
    # Within the epoch in progress (epoch + 1), from the job's progress file; None if unknown.
    epoch_fraction: float | None = None
    train_loss: float | None = None  # the running training loss of that epoch
    images_per_s: float | None = None


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
    error: str | None = None  # the user error the supervisor stopped on, if it did

    def counts(self) -> dict[str, int]:
        """Return how many jobs are in each state."""
        out: dict[str, int] = {}
        for job in self.jobs:
            out[job.state] = out.get(job.state, 0) + 1
        return out


def epoch_eta_s(line: dict) -> float | None:
    """Return the seconds left after a metrics line's epoch, at the pace so far; None if unknown."""
    epoch, epochs, elapsed_s = (_number(line.get(k)) for k in ("epoch", "epochs", "elapsed_s"))
    if not (epoch and epochs and elapsed_s):
        return None
    return elapsed_s / epoch * (epochs - epoch)


def epoch_progress(job: JobPaths, epochs_done: int, started: float | None) -> dict | None:
    """Return the job's progress record of the epoch after epochs_done, None if there is none.

    A record of an earlier epoch, or one written before this run started, is stale.
    """
    rec = read_json(job.progress_json)
    if not isinstance(rec, dict) or rec.get("epoch") != epochs_done + 1:
        return None
    batch, batches, at = (_number(rec.get(k)) for k in ("batch", "batches", "time"))
    if batch is None or not batches or at is None or (started and at < started):
        return None
    return rec


def load_job_view(job: JobPaths, params: dict, now: float) -> JobView:
    """Return one job's view from its state, the last line of its metrics and its progress."""
    st = read_state(job)
    last = read_last_jsonl(job.metrics_jsonl) or {}
    elapsed = None
    if st.started:
        elapsed = (st.ended or now) - st.started
    epoch, epochs = last.get("epoch"), last.get("epochs")
    if epochs is None:
        spec = read_json(job.spec_json)
        epochs = spec.get("epochs") if isinstance(spec, dict) else None
    reason = st.reason
    if not reason and st.state in (FAILED, TIMEOUT):
        reason = end_reason(st.exit_code, st.signal)
    eta_s = epoch_eta_s(last) if st.state == RUNNING else None
    now_in = epoch_progress(job, epoch if isinstance(epoch, int) else 0, st.started) \
        if st.state == RUNNING else None
    if now_in:  # fresher than the last epoch's pace, and there from the first line on
        left_s = _number(now_in.get("eta_s"))
        eta_s = eta_s if left_s is None else max(0.0, left_s - (now - now_in["time"]))
        epochs = now_in.get("epochs") if epochs is None else epochs
    return JobView(
        job_id=job.job_id,
        params=params,
        state=st.state,
        attempt=st.attempt,
        runs=st.runs,
        gpus=st.gpus,
        gpu_indices=st.gpu_indices,
        cpus=st.cpus,
        epoch=epoch if isinstance(epoch, int) else None,
        epochs=epochs if isinstance(epochs, int) else None,
        val_accuracy=_number(last.get("val_accuracy")),
        elapsed_s=elapsed,
        eta_s=eta_s,
        reason=reason,
        exit_code=st.exit_code,
        signal=st.signal,
        slurm_job_id=st.slurm_job_id,
        log_tail=st.log_tail,
        epoch_fraction=now_in["batch"] / now_in["batches"] if now_in else None,
        train_loss=_number(now_in.get("train_loss")) if now_in else None,
        images_per_s=_number(now_in.get("images_per_s")) if now_in else None,
    )


def _number(value: object) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def unreadable_view(paths: SweepPaths, why: str) -> SweepView:
    """Return what status shows of a sweep folder it cannot read: one line saying why."""
    try:
        from launcher.machine.foreign import user_name

        user = user_name(os.lstat(paths.root).st_uid)
    except OSError:
        user = "?"
    return SweepView(sweep_id=paths.sweep_id, name=paths.sweep_id, executor="?", created=0.0,
                     user=user, host="?", supervisor="unreadable", jobs=(), error=why)


def load_or_say_why(paths: SweepPaths, now: float | None = None) -> SweepView:
    """Return the sweep's view, or (a colleague's folder we may not read, a torn plan) one
    that says why it cannot be shown: one sweep never hides the others."""
    from launcher.errors import UserError

    try:
        return load_sweep_view(paths, now)
    except UserError as err:
        return unreadable_view(paths, str(err))
    except OSError as err:
        return unreadable_view(paths, f"cannot read it: {err.strerror or err}")


LOST = "lost"  # shown, never written: its state says running, but nothing runs it any more
SHOWN_STATES = (*STATES[:2], LOST, *STATES[2:])  # running, stopping, lost, waiting, ...


def lost_or_not(paths: SweepPaths, job: JobView) -> JobView:
    """Return the job as status shows it under a dead supervisor: `lost` when its state says
    it runs here but the process it names (pid and create time) is gone."""
    if job.state not in (RUNNING, STOPPING):
        return job
    import socket

    from launcher.machine import procs

    st = read_state(paths.job(job.job_id))
    if st.host not in (None, socket.gethostname()) or (
            st.pid is not None and procs.same_process(st.pid, st.pid_create_time)):
        return job
    return job._replace(state=LOST, elapsed_s=None, eta_s=None,
                        reason=f"supervisor dead; launch sweep --resume {paths.sweep_id}")


def load_sweep_view(paths: SweepPaths, now: float | None = None) -> SweepView:
    """Return the view of one sweep, read from its run directory."""
    now = time.time() if now is None else now
    info = read_info(paths)
    jobs = tuple(load_job_view(paths.job(j.id), j.params, now) for j in info.jobs)
    alive = supervisor_alive(paths)
    if info.executor != "local" or alive is None:
        supervisor = "none"
    elif alive:
        supervisor = "running"
    elif all(j.state in ENDED_STATES for j in jobs):
        supervisor = "ended"
    else:
        supervisor = "dead"
        jobs = tuple(lost_or_not(paths, job) for job in jobs)
    record = read_supervisor(paths) if supervisor != "none" else None
    return SweepView(
        sweep_id=paths.sweep_id,
        name=info.name,
        executor=info.executor,
        created=info.created,
        user=info.user,
        host=info.host,
        supervisor=supervisor,
        jobs=jobs,
        error=record.error if record else None,
    )
