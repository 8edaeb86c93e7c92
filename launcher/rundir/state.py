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
    running --CUDA out of memory, oom_retries left--> oom --placed where it fits--> running
    running --its main process ended, others it started live on--> stopping --> ended

An ended state is final for the run that reached it: only a resume starts the job again.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from launcher import contract
from launcher.contract import atomic_write as atomic
from launcher.machine.nvml import gib
from launcher.rundir.layout import JobPaths
from launcher.rundir.store import read_json, this_run

PENDING, WAITING, RUNNING, PREEMPTED = "pending", "waiting", "running", "preempted"
STOPPING = "stopping"  # its main process ended; what it left is being stopped
OOM = "oom"  # its run died of CUDA out-of-memory; it waits to run again where it fits
FINISHED, FAILED, CANCELLED, TIMEOUT = "finished", "failed", "cancelled", "timeout"
# In the order status counts them: what is happening first, then how jobs ended.
STATES = (RUNNING, STOPPING, WAITING, PENDING, OOM, PREEMPTED, FINISHED, FAILED, CANCELLED,
          TIMEOUT)
ENDED_STATES = (FINISHED, FAILED, CANCELLED, TIMEOUT)
RESUMABLE = (FAILED, CANCELLED, TIMEOUT, WAITING, PREEMPTED)  # `--resume` runs these again
# (an oom job keeps its state on --resume: its need and its oom retries go with it)

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
    # GPU memory (launcher/machine/memory.py): the most its processes held in any run, as
    # NVML saw it; what its next run needs free (raised after an oom); the oom retries spent;
    # what it held and what was free on its GPU when it last ran out.
    gpu_memory_peak_bytes: int | None = None
    gpu_memory_need_bytes: int | None = None
    oom_retries: int = 0
    oom_held_bytes: int | None = None
    oom_free_bytes: int | None = None
    master_port: int | None = None  # leased for a job of several GPUs (machine/ports.py)


_TYPES: dict[str, tuple[type, ...]] = {
    "reason": (str,), "attempt": (int,), "runs": (int,), "pid": (int,), "pgid": (int,),
    "pid_create_time": (int, float), "host": (str,), "started": (int, float),
    "ended": (int, float), "exit_code": (int,), "signal": (int,), "log_tail": (str,),
    "cpus": (int,), "num_workers": (int,), "num_threads": (int,), "slurm_job_id": (str,),
    "slurm_job_gpus": (str,), "gpu_memory_peak_bytes": (int,), "gpu_memory_need_bytes": (int,),
    "oom_retries": (int,), "oom_held_bytes": (int,), "oom_free_bytes": (int,),
    "master_port": (int,),
}


def _field(raw: dict, key: str) -> Any:
    value = raw.get(key)
    ok = isinstance(value, _TYPES[key]) and not isinstance(value, bool)
    return value if ok else JobState._field_defaults[key]


# What a job's state carries from run to run of what its GPU memory taught.
MEMORY_FIELDS = ("gpu_memory_peak_bytes", "gpu_memory_need_bytes", "oom_retries",
                 "oom_held_bytes", "oom_free_bytes")


def carried_memory(prev: JobState) -> dict[str, Any]:
    """Return the GPU memory fields of a job's state that the state of its next run keeps."""
    return {key: getattr(prev, key) for key in MEMORY_FIELDS}


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


def ran_out_of_memory(exit_code: int | None, stopped: str | None, log_tail: str) -> bool:
    """Return whether a run died of GPU out-of-memory: the built-in job says so by its exit
    code (EXIT_OOM), any other job by what its last run's last lines say
    (launcher/contract.py: OOM_PATTERNS). A run stopped from outside did not."""
    if stopped is not None or exit_code == contract.EXIT_OK:
        return False
    if exit_code == contract.EXIT_OOM:
        return True
    return contract.out_of_memory_line(this_run(log_tail)) is not None


class OomEnd(NamedTuple):
    """What is known of a run that died of GPU out-of-memory (launcher/machine/memory.py)."""

    gpus: str | None  # where it ran, as status numbers GPUs: "2", "0,1"
    held_bytes: int | None  # what its processes held at the last look
    free_bytes: int | None  # what was free on its GPU then
    cause: str | None  # who took the memory: "alice's process grew"
    need_bytes: int | None  # what its next run needs free
    spent: int  # oom retries spent before this end
    allowed: int  # oom_retries


def oom_text(oom: OomEnd) -> str:
    """Return how a run ran out of GPU memory: "oom on GPU 2 at 10.8 GiB (1.1 GiB free:
    alice's process grew)"."""
    where = f" on GPU {oom.gpus}" if oom.gpus else ""
    held = f" at {gib(oom.held_bytes)}" if oom.held_bytes is not None else ""
    free = [f"{gib(oom.free_bytes)} free"] if oom.free_bytes is not None else []
    why = ": ".join(free + ([oom.cause] if oom.cause else []))
    return f"{OOM}{where}{held}" + (f" ({why})" if why else "")


class Outcome(NamedTuple):
    """What a run's end makes of its job: the next state, why, and whether it runs again."""

    state: str
    reason: str | None
    retry: bool


def end_of_run(exit_code: int | None, sig: int | None, stopped: str | None,
               retries_left: int, oom: OomEnd | None = None) -> Outcome:
    """Return the job's next state after a run that exited with exit_code or died of sig.

    stopped says what stopped it from outside (STOP_*; None: it ended by itself). A failure
    with retries_left > 0 goes back to pending; a run that was stopped is never retried
    here: a cancel or a timeout is final, and a scheduler that stops a job requeues it
    itself. A run that died of GPU out-of-memory (oom, given when it did) is `oom` while
    oom_retries last, without spending max_retries, and a failure like any other after.
    The same end reads the same on every executor.
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
    if oom is not None and oom.spent < oom.allowed:
        wants = f" waits for {gib(oom.need_bytes)} free" if oom.need_bytes else \
            " waits for a GPU of its own"
        return Outcome(OOM, f"{oom_text(oom)}; retry {oom.spent + 1}/{oom.allowed}{wants}", True)
    if oom is not None:
        how = f"{oom_text(oom)}, {how}; oom_retries ({oom.allowed}) spent"
    if retries_left > 0:
        return Outcome(PENDING, f"{RETRY_REASON} {how}", True)
    return Outcome(FAILED, how, False)


def memory_after(st: JobState, outcome: Outcome, oom: OomEnd | None,
                 peak_bytes: int | None) -> JobState:
    """Return st with what a run's end taught of the job's GPU memory: its peak; after an
    oom, what it held and what was free; and when it runs again for it, the oom retries
    spent and what its next run needs."""
    peak = max(peak_bytes or 0, st.gpu_memory_peak_bytes or 0) or None
    st = st._replace(gpu_memory_peak_bytes=peak)
    if oom is None:
        return st
    st = st._replace(oom_held_bytes=oom.held_bytes, oom_free_bytes=oom.free_bytes)
    if outcome.state == OOM:
        st = st._replace(oom_retries=oom.spent + 1, gpu_memory_need_bytes=oom.need_bytes)
    return st
