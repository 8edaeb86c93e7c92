"""A job's state: its record, its vocabulary, and how a run's end becomes the next state.

Both executors write a job's state the same way: the local supervisor (launcher/local) and
the Slurm task (launcher/slurm/task.py) call `end_of_run` to turn how a run ended into the
job's next state, and `write_state` to record it; everything that shows a job reads it back
with `read_state`. Fields an executor does not know stay None (the Slurm ids locally, the
process group on Slurm).

    pending --placed--> running --ended--> finished | failed | cancelled | timeout
    pending --waits for GPUs or CPUs--> waiting --placed--> running
    running --failed, retries left--> pending ("retry after exit 3") --placed--> running
    running --stopped by Slurm--> preempted --requeued, or `launch sweep --resume`--> running
    running --its main process ended, others it started live on--> stopping --> ended

An ended state is final for the run that reached it: only a resume starts the job again.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from launcher import contract
from launcher.contract import atomic_write as atomic
from launcher.rundir.layout import JobPaths
from launcher.rundir.store import read_json

PENDING, WAITING, RUNNING, PREEMPTED = "pending", "waiting", "running", "preempted"
STOPPING = "stopping"  # its main process ended; what it left is being stopped
FINISHED, FAILED, CANCELLED, TIMEOUT = "finished", "failed", "cancelled", "timeout"
# In the order status counts them: what is happening first, then how jobs ended.
STATES = (RUNNING, STOPPING, WAITING, PENDING, PREEMPTED, FINISHED, FAILED, CANCELLED, TIMEOUT)
ENDED_STATES = (FINISHED, FAILED, CANCELLED, TIMEOUT)
RESUMABLE = (FAILED, CANCELLED, TIMEOUT, WAITING, PREEMPTED)  # `--resume` runs these again

# Reasons: why a job is in its state, in the words status and the follower show.
RETRY_REASON = "retry after"  # a pending job that waits to run again: "retry after exit 3"
CANCELLED_BEFORE_START = "launch cancel, before it started"
CANCELLED_BEFORE_RERUN = "launch cancel, before its next run"
FINISHED_UNSUPERVISED = "finished while unsupervised"
STATE_UNREADABLE = "its state file is unreadable"  # read_state of a torn or foreign file
RESUBMITTED = "resubmitted"

# What stopped a run from outside, as the executor knows it (None: it ended by itself).
STOP_CANCEL = "cancel"  # `launch cancel`
STOP_TIMEOUT = "timeout"  # it ran past timeout_min
STOP_REQUEUE = "requeue"  # the scheduler asked for a checkpoint and requeues it (SIGUSR2)
STOP_PREEMPT = "preempt"  # the scheduler sent SIGTERM: it may requeue it, or end it


class JobState(NamedTuple):
    """What a job's state file records; every field but `state` may be unknown (None)."""

    state: str = PENDING
    reason: str | None = None
    attempt: int = 0  # the attempt now running or last run; a retry is the next attempt
    runs: int = 0  # how many times a process of this job started (retries, resumes)
    pid: int | None = None
    pgid: int | None = None
    pid_create_time: float | None = None
    host: str | None = None
    started: float | None = None  # unix time the current run started
    ended: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    log_tail: str | None = None  # the last lines of a failed run's output
    gpus: tuple[str, ...] = ()  # UUIDs, as CUDA_VISIBLE_DEVICES names them
    gpu_indices: tuple[int, ...] = ()
    cpus: int | None = None
    num_workers: int | None = None
    num_threads: int | None = None
    slurm_job_id: str | None = None  # Slurm only: "ARRAY_INDEX"
    slurm_job_gpus: str | None = None  # Slurm only: SLURM_JOB_GPUS


_TYPES: dict[str, tuple[type, ...]] = {
    "reason": (str,), "attempt": (int,), "runs": (int,), "pid": (int,), "pgid": (int,),
    "pid_create_time": (int, float), "host": (str,), "started": (int, float),
    "ended": (int, float), "exit_code": (int,), "signal": (int,), "log_tail": (str,),
    "cpus": (int,), "num_workers": (int,), "num_threads": (int,), "slurm_job_id": (str,),
    "slurm_job_gpus": (str,),
}


def _field(raw: dict, key: str) -> Any:
    value = raw.get(key)
    ok = isinstance(value, _TYPES[key]) and not isinstance(value, bool)
    return value if ok else JobState._field_defaults[key]


def parse_state(raw: Any) -> JobState | None:
    """Return the record a state file's content describes (a field not understood is
    unknown), or None when it describes no state at all."""
    if not isinstance(raw, dict) or raw.get("state") not in STATES:
        return None
    gpus = raw.get("gpus") if isinstance(raw.get("gpus"), list) else []
    indices = raw.get("gpu_indices") if isinstance(raw.get("gpu_indices"), list) else []
    return JobState(
        state=raw["state"],
        gpus=tuple(str(g) for g in gpus),
        gpu_indices=tuple(i for i in indices if isinstance(i, int) and not isinstance(i, bool)),
        **{key: _field(raw, key) for key in _TYPES})


def read_state(job: JobPaths) -> JobState:
    """Return a job's state; a job that has none yet is pending, as is one whose state file
    cannot be read (its reason says so: its result and the supervisor's log may tell more)."""
    missing = object()
    raw = read_json(job.state_json, missing)
    if raw is missing and not job.state_json.exists():
        return JobState()
    return parse_state(raw) or JobState(reason=STATE_UNREADABLE)


def write_state(job: JobPaths, state: JobState) -> None:
    """Record a job's state (atomically); the one way its state file is written."""
    assert state.state in STATES, state
    assert all(value is None or isinstance(value, _TYPES[key])
               for key, value in state._asdict().items() if key in _TYPES), state
    # An end is written once per run and must survive a crash of the machine: fsync it.
    atomic(job.state_json, (json.dumps(state._asdict(), indent=1) + "\n").encode(),
           durable=state.state in ENDED_STATES)


# -- how a run ended ------------------------------------------------------------------------

def end_reason(exit_code: int | None, sig: int | None) -> str | None:
    """Return how a run ended: "exit 3", "signal 9 (SIGKILL)"; None if unknown."""
    if sig is not None:
        import signal  # only when a run was killed: status of healthy sweeps skips it

        try:
            return f"signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            return f"signal {sig}"
    return None if exit_code is None else f"exit {exit_code}"


def run_end(exit_code: int | None, sig: int | None) -> str:
    """Return how a run ended, for reasons and logs: "exit 3"; after a checkpoint (the
    contract's EXIT_REQUEUE) "exit N, checkpoint written"."""
    how = end_reason(exit_code, sig) or "no exit status"
    if exit_code == contract.EXIT_REQUEUE:
        how += ", checkpoint written"
    return how


class Outcome(NamedTuple):
    """What a run's end makes of its job: the next state, why, and whether it runs again."""

    state: str
    reason: str | None
    retry: bool


def end_of_run(exit_code: int | None, sig: int | None, stopped: str | None,
               retries_left: int) -> Outcome:
    """Return the job's next state after a run that exited with exit_code or died of sig.

    stopped says what stopped it from outside (STOP_*; None: it ended by itself). A failure
    with retries_left > 0 goes back to pending; a run that was stopped is never retried
    here: a cancel or a timeout is final, and a scheduler that stops a job requeues it
    itself. The same end reads the same on every executor.
    """
    if exit_code == contract.EXIT_OK:
        return Outcome(FINISHED, None, False)
    how = run_end(exit_code, sig)
    if stopped == STOP_CANCEL:
        return Outcome(CANCELLED, f"launch cancel ({how})", False)
    if stopped == STOP_TIMEOUT:
        return Outcome(TIMEOUT, f"past timeout_min ({how})", False)
    if stopped == STOP_REQUEUE:
        return Outcome(PREEMPTED, f"requeued after SIGUSR2 ({how}); resumes from its "
                       "checkpoint", False)
    if stopped == STOP_PREEMPT:
        return Outcome(PREEMPTED, f"stopped by SIGTERM ({how}); Slurm requeues or ends it",
                       False)
    if retries_left > 0:
        return Outcome(PENDING, f"{RETRY_REASON} {how}", True)
    return Outcome(FAILED, how, False)
