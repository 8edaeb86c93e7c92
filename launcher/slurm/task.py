"""What runs on a Slurm node for one job: its environment, its state, its requeue.

Both ways a sweep reaches Slurm end here. `launch sweep --executor slurm` pickles a `SlurmTask`
through submitit (one array task per job); the standalone script of `launch sbatch` runs
`python -m launcher.slurm_task JOB_DIR`. Either way the job itself is `python -m jobs
JOB_DIR/SPEC --out JOB_DIR` (or the job's own command) in a child process, so the training
code, the run directory and the seeds are those of a local run; only the CPU split and the
GPUs come from Slurm's allocation instead of the local budget and leases.

Stopping: Slurm's SIGTERM (scancel, `scontrol requeue`, preemption) reaches the child directly
and is forwarded too; it writes its checkpoint and exits EXIT_REQUEUE. SIGUSR2 before the time
limit goes to submitit, which calls `SlurmTask.checkpoint`: forward SIGTERM, wait for that exit,
hand back a `DelayedSubmission` so submitit requeues the task, which then resumes from the
checkpoint.
How a run's end becomes the job's state is launcher/rundir/state.py's `end_of_run`, as for
the local executor; a run that died of GPU out-of-memory is requeued by the task itself
(`scontrol requeue`) while oom_retries last, with what it held plus the margin written into
the job's state as the need of its next run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher import contract
from launcher.machine.cpus import CpuShare, cpu_share
from launcher.rundir import state as js
from launcher.rundir.layout import JobPaths
from launcher.rundir.state import JobState, end_of_run, memory_after, read_state, write_state
from launcher.rundir.store import LOG_MARK, log_tail, read_json
from launcher.rundir.sweepdir import (
    SweepInfo,
    cancel_requested,
    materialize_job,
    read_info,
    read_specs,
)
from launcher.slurm.taskmemory import ChildMemory

CHECKPOINT_WAIT_S = 60.0  # well inside submitit's 90 s between SIGUSR2 and the kill
LOOK_S = 2.0  # how often the task looks at its job's GPU memory, where NVML answers


def slurm_job_id(env: dict) -> str | None:
    """Return the Slurm id of this task: "ARRAY_INDEX" for array tasks, else the job id."""
    array, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return env.get("SLURM_JOB_ID")


def allocated_gpus(env: dict) -> list[str]:
    """Return the GPUs Slurm gave this task, as CUDA_VISIBLE_DEVICES names them."""
    return [g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]


def allocated_cpus(env: Mapping, slurm: Mapping) -> int:
    """Return the CPUs of this task: Slurm's grant, else what the sweep's `slurm:` asked for."""
    for value in (env.get("SLURM_CPUS_PER_TASK"), slurm.get("cpus_per_task")):
        try:
            if int(value) >= 1:
                return int(value)
        except (TypeError, ValueError):
            continue
    return 1


def task_share(cpus: int, spec: dict) -> CpuShare:
    """Return the CPU split inside an allocation: cpus_per_task - 1 DataLoader workers.

    As on a local GPU (launcher/machine/cpus.py): the main process mostly waits for the device,
    so all CPUs but one feed the DataLoader, unless the spec names num_workers or a device
    loader.
    """
    return cpu_share(cpus, on_gpu=True, spec=spec)


def task_env(base: Mapping, share: CpuShare, sweep_id: str, job: JobPaths,
             gpus_requested: int = 0, seed: int = 0) -> dict:
    """Return the child's environment: Slurm's GPUs untouched, threads and workers from share.

    A task that asked for no GPU sees none. One that asked for GPUs keeps whatever Slurm
    set: on sites whose gres.conf names no device files Slurm sets no CUDA_VISIBLE_DEVICES,
    and hiding every GPU there would silently train on the CPU.
    """
    if contract.ENV_VISIBLE_DEVICES not in base and gpus_requested:
        print(f"launch: Slurm set no {contract.ENV_VISIBLE_DEVICES} for {job.job_id} although "
              f"it asked for {gpus_requested} GPUs; the job sees every GPU of the node",
              file=sys.stderr, flush=True)
    keep = contract.ENV_VISIBLE_DEVICES in base or gpus_requested
    return contract.job_env(base, sweep_id=sweep_id, job_id=job.job_id, job_dir=job.dir,
                            num_workers=share.num_workers, num_threads=share.num_threads,
                            gpus=None if keep else [], seed=seed)


@dataclass
class Child:
    """The job's process, reaped by a thread so that signal handlers never block on a lock."""

    proc: subprocess.Popen
    code: int | None = None

    def __post_init__(self) -> None:
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        self.code = self.proc.wait()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Return the exit status (negative: killed by that signal), or None on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.code is None and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
        return self.code

    def signal(self, sig: int) -> None:
        """Send sig to the child unless it has been reaped already."""
        if self.code is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


class Task:
    """One run of one job on this node: starts the child, records how it ended."""

    def __init__(self, job_dir: Path, env: Mapping | None = None):
        self.job = JobPaths(Path(job_dir).absolute())
        self.env = dict(os.environ if env is None else env)
        self.info: SweepInfo = read_info(self.job.sweep)
        self.spec = read_json(self.job.spec_json)
        if self.spec is None:  # written on first run, from the sweep's one specs file
            spec = read_specs(self.job.sweep).get(self.job.job_id)
            if spec is not None:
                self.spec = read_json(materialize_job(self.job, spec))
        if not isinstance(self.spec, dict):
            raise RuntimeError(f"no readable spec for {self.job.dir}")
        self.child: Child | None = None
        self.state = JobState()
        self.requeued = False  # we asked the child for a checkpoint so that Slurm requeues it
        self.terminated = False  # Slurm sent us SIGTERM (scancel, preemption, requeue)
        self.recorded = False
        self.memory = ChildMemory(self.job, self.info)  # the child's, where NVML answers

    @property
    def job_dir(self) -> Path:
        return self.job.dir

    def cancelled(self) -> bool:
        """Return whether `launch cancel` marked this job or its sweep."""
        return cancel_requested(self.job) is not None

    def cancelled_before_start(self) -> bool:
        """Return whether `launch cancel` marked this job; if so, record it cancelled.

        scancel normally keeps such a task from ever starting, but when it failed (a
        controller that did not answer) Slurm may still start it: it must not run then.
        """
        if not self.cancelled():
            return False
        prev = read_state(self.job)  # a requeued job ran before: not "before it started"
        write_state(self.job, JobState(
            state=js.CANCELLED, runs=prev.runs, ended=time.time(),
            slurm_job_id=slurm_job_id(self.env),
            reason=js.CANCELLED_BEFORE_RERUN if prev.runs else js.CANCELLED_BEFORE_START))
        return True

    def start(self) -> Child:
        """Start the child and record the job `running`; return the child."""
        share = task_share(allocated_cpus(self.env, self.info.slurm), self.spec)
        gpus_requested = int(self.info.slurm.get("gpus_per_node") or 0)
        env = task_env(self.env, share, self.info.sweep_id, self.job, gpus_requested,
                       seed=contract.job_seed(self.spec))
        gpus = allocated_gpus(self.env)
        prev = read_state(self.job)
        cwd = self.info.cwd if self.info.cwd and os.path.isdir(self.info.cwd) else str(self.job.dir)
        argv = contract.job_argv(self.spec, self.job.spec_json, self.job.dir)
        with open(self.job.stdout_log, "ab") as out:
            out.write(f"{LOG_MARK} {time.strftime('%Y-%m-%d %H:%M:%S')} slurm job "
                      f"{slurm_job_id(self.env)} on {socket.gethostname()}: "
                      f"{contract.ENV_VISIBLE_DEVICES}="
                      f"{env.get(contract.ENV_VISIBLE_DEVICES)!r} "
                      f"threads={share.num_threads} workers={share.num_workers}\n".encode())
            out.flush()
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.child = Child(proc)
        self.state = JobState(
            state=js.RUNNING, attempt=int(self.env.get("SLURM_RESTART_COUNT") or 0) + 1,
            runs=prev.runs + 1, pid=proc.pid, host=socket.gethostname(), gpus=tuple(gpus),
            gpu_indices=tuple(int(g) for g in gpus if g.isdigit()),
            slurm_job_gpus=self.env.get("SLURM_JOB_GPUS"), cpus=share.cpus,
            num_workers=share.num_workers, num_threads=share.num_threads,
            started=time.time(), slurm_job_id=slurm_job_id(self.env),
            **js.carried_memory(prev))
        write_state(self.job, self.state)
        return self.child

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Return the child's exit status once it ends (None after timeout_s), looking at its
        GPU memory meanwhile."""
        assert self.child is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = LOOK_S if deadline is None else min(LOOK_S, deadline - time.monotonic())
            status = self.child.wait(max(left, 0))
            if status is not None or (deadline is not None and time.monotonic() >= deadline):
                return status
            self.memory.look(self.child.proc.pid)

    def stopped(self, code: int | None, sig: int | None) -> str | None:
        """Return what stopped the run from outside (launcher/rundir/state.py: STOP_*).

        A child that checkpointed (EXIT_REQUEUE), or a command killed by a signal, was stopped by
        Slurm even when its SIGTERM reached the child alone.
        """
        if self.cancelled():
            return js.STOP_CANCEL
        if self.requeued:
            return js.STOP_REQUEUE
        if self.terminated or code == contract.EXIT_REQUEUE or (
                "command" in self.spec and sig is not None):
            return js.STOP_PREEMPT
        return None

    def record_end(self, status: int) -> str:
        """Record the job's state for the child's exit status (once); return the state."""
        code, sig = (None, -status) if status < 0 else (status, None)
        stopped = self.stopped(code, sig)
        tail = log_tail(self.job.stdout_log) if code != contract.EXIT_OK else ""
        oom = self.memory.oom_end(self.state, code, stopped, tail)
        # Slurm requeues a task itself; a retry of a failure is not the task's to make. An
        # oom is, within oom_retries: the caller requeues it.
        outcome = end_of_run(code, sig, stopped, retries_left=0, oom=oom)
        if not self.recorded:
            self.recorded = True
            st = self.state._replace(
                state=outcome.state, reason=outcome.reason, ended=time.time(), exit_code=code,
                signal=sig, log_tail=tail if outcome.state in (js.FAILED, js.OOM) else None)
            write_state(self.job, memory_after(st, outcome, oom, self.memory.peak_bytes))
        return outcome.state

    def stop_for_requeue(self) -> int | None:
        """Forward SIGTERM, wait for the child's checkpoint; return its exit status."""
        if self.child is None:
            return None
        self.requeued = True
        self.child.signal(signal.SIGTERM)
        status = self.child.wait(CHECKPOINT_WAIT_S)
        if status is None:  # no checkpoint in time: Slurm's kill would lose it anyway
            self.child.signal(signal.SIGKILL)
            status = self.child.wait()
        return status


class JobStopped(RuntimeError):
    """The job did not finish: it failed, or was stopped for a requeue or a cancel."""


_CURRENT: dict[str, Task] = {}  # job dir -> its Task in this process (kept out of pickles)


def forward_to_child(task: Task) -> None:
    """Forward SIGTERM to the child too: under proctrack/pgid Slurm signals our group only."""
    def handler(signum, frame):
        task.terminated = True
        if task.child is not None:
            task.child.signal(signum)
    signal.signal(signal.SIGTERM, handler)


class SlurmTask:
    """The callable submitit runs in every task of one array; checkpointable in submitit's sense.

    It holds the array's job ids and finds its own from SLURM_ARRAY_TASK_ID, so one pickle
    serves the whole array and a requeued task (same index) finds the same job again.
    """

    def __init__(self, sweep_dir: str, job_ids: tuple[str, ...]):
        self.sweep_dir = sweep_dir
        self.job_ids = tuple(job_ids)

    def job_dir(self) -> Path:
        """Return the folder of this task's job."""
        index = int(os.environ.get("SLURM_ARRAY_TASK_ID") or 0)
        return Path(self.sweep_dir) / "jobs" / self.job_ids[index]

    def __call__(self) -> str:
        task = Task(self.job_dir())
        if task.cancelled_before_start():
            return js.CANCELLED
        _CURRENT[str(task.job_dir)] = task
        forward_to_child(task)
        task.start()
        state = task.record_end(task.wait())
        if state == js.OOM:  # runs again, in the same array task, where Slurm puts it
            requeue_self(task.env)
        if state != js.FINISHED:
            raise JobStopped(f"{task.job_dir.name}: {state}")
        return state

    def checkpoint(self):
        """Return a DelayedSubmission of this task once the child wrote its checkpoint.

        submitit calls this on SIGUSR2 (time limit or preemption) and requeues what it gets;
        None (the job finished or crashed meanwhile) ends the task without a requeue.
        """
        import submitit

        task = _CURRENT.get(str(self.job_dir().absolute()))
        if task is None or task.child is None:
            return submitit.helpers.DelayedSubmission(self)
        status = task.stop_for_requeue()
        # Killed after CHECKPOINT_WAIT_S, a built-in job still has its last checkpoint on
        # disk and continues from it, as deterministically as from a fresh one.
        requeue = status is not None and status != 0 and not task.cancelled() and (
            status in (contract.EXIT_REQUEUE, -signal.SIGKILL) or "command" in task.spec)
        task.requeued = requeue
        task.record_end(status if status is not None else 1)
        return submitit.helpers.DelayedSubmission(self) if requeue else None


def requeue_self(env: dict) -> bool:
    """Ask Slurm to requeue this task (the standalone script's SIGUSR2 path); return success."""
    job = slurm_job_id(env)
    if not job:
        return False
    try:
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run one job in a standalone sbatch array task: `python -m launcher.slurm_task JOB_DIR`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m launcher.slurm_task JOB_DIR", file=sys.stderr)
        return 2
    task = Task(Path(argv[0]))
    if task.cancelled_before_start():
        return 0
    usr2: list[int] = []
    forward_to_child(task)
    signal.signal(signal.SIGUSR2, lambda signum, frame: usr2.append(signum))
    child = task.start()
    looked = time.monotonic()
    while child.wait(0.2) is None:
        if usr2:
            status = task.stop_for_requeue()
            break
        if time.monotonic() - looked >= LOOK_S:
            task.memory.look(child.proc.pid)
            looked = time.monotonic()
    else:
        status = child.code
    assert status is not None
    if usr2 and status in (contract.EXIT_REQUEUE, -signal.SIGKILL) and not task.cancelled():
        task.requeued = True
        task.record_end(status)
        return 0 if requeue_self(task.env) else contract.EXIT_REQUEUE
    task.requeued = False
    state = task.record_end(status)
    if state == js.OOM:
        return 0 if requeue_self(task.env) else 1
    return 0 if state == js.FINISHED else (status if status > 0 else 1)


if __name__ == "__main__":
    sys.exit(main())
