"""What runs on a Slurm node for one job: its environment, its state.json, its requeue.

Both ways a sweep reaches Slurm end here. `launch sweep --executor slurm` pickles a `SlurmTask`
through submitit (one array task per job); the standalone script of `launch sbatch` runs
`python -m launcher.slurm_task JOB_DIR`. Either way the job itself is `python -m jobs
JOB_DIR/spec.json --out JOB_DIR` (or the job's own command) in a child process, so the training
code, the run directory and the seeds are those of a local run; only the CPU split and the
GPUs come from Slurm's allocation instead of the local budget and leases.

Stopping: Slurm's SIGTERM (scancel, `scontrol requeue`, preemption) reaches the child directly
and is forwarded too; it writes its checkpoint and exits 75. SIGUSR2 before the time limit goes
to submitit, which calls `SlurmTask.checkpoint`: forward SIGTERM, wait for exit 75, hand back a
`DelayedSubmission` so submitit requeues the task, which then resumes from the checkpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from launcher import rundir
from launcher.cpus import CpuShare, cpu_share
from launcher.logs import job_log_tail
from launcher.rundir import atomic_write_json, materialize_job, read_json, read_specs
from launcher.views import end_reason

EXIT_REQUEUE = 75  # jobs/__main__.py: checkpoint written after SIGTERM/SIGUSR2
CHECKPOINT_WAIT_S = 60.0  # well inside submitit's 90 s between SIGUSR2 and the kill


def slurm_job_id(env: dict) -> str | None:
    """Return the Slurm id of this task: "ARRAY_INDEX" for array tasks, else the job id."""
    array, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return env.get("SLURM_JOB_ID")


def allocated_gpus(env: dict) -> list[str]:
    """Return the GPUs Slurm gave this task, as CUDA_VISIBLE_DEVICES names them."""
    return [g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]


def allocated_cpus(env: dict, info: dict) -> int:
    """Return the CPUs of this task: Slurm's grant, else what the sweep asked for."""
    for value in (env.get("SLURM_CPUS_PER_TASK"), (info.get("slurm") or {}).get("cpus_per_task")):
        try:
            if int(value) >= 1:
                return int(value)
        except (TypeError, ValueError):
            continue
    return 1


def task_share(cpus: int, spec: dict) -> CpuShare:
    """Return the CPU split inside an allocation: cpus_per_task - 1 DataLoader workers.

    As on a local GPU (launcher.cpus): the main process mostly waits for the device, so all
    CPUs but one feed the DataLoader, unless the spec names num_workers or a device loader.
    """
    return cpu_share(cpus, on_gpu=True, spec=spec)


def task_env(base: dict, share: CpuShare, sweep_id: str, job_id: str, job_dir: Path,
             gpus_requested: int = 0) -> dict:
    """Return the child's environment: Slurm's GPUs untouched, threads and workers from share.

    A task that asked for no GPU sees none. One that asked for GPUs keeps whatever Slurm
    set: on sites whose gres.conf names no device files Slurm sets no CUDA_VISIBLE_DEVICES,
    and hiding every GPU there would silently train on the CPU.
    """
    env = {
        **base,
        **share.env(),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "LAUNCH_SWEEP_ID": sweep_id,
        "LAUNCH_JOB_ID": job_id,
        "LAUNCH_JOB_DIR": str(job_dir),
    }
    if "CUDA_VISIBLE_DEVICES" not in base:
        if gpus_requested:
            print(f"launch: Slurm set no CUDA_VISIBLE_DEVICES for {job_id} although it asked "
                  f"for {gpus_requested} GPUs; the job sees every GPU of the node",
                  file=sys.stderr, flush=True)
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def job_argv(spec: dict, job_dir: Path) -> list[str]:
    """Return the argv of a job: its own command, or the built-in training job."""
    if "command" in spec:
        return [str(a) for a in spec["command"]]
    return [sys.executable, "-m", "jobs", str(job_dir / "spec.json"), "--out", str(job_dir)]


def cancel_requested(job_dir: Path) -> bool:
    """Return whether `launch cancel` marked this job or its sweep."""
    return rundir.cancel_requested(job_dir.parent.parent, job_dir.name) is not None


def end_state(code: int | None, sig: int | None, cancelled: bool, requeued: bool,
              is_command: bool) -> tuple[str, str | None]:
    """Return (state, reason) of a task whose child exited with code (or died of sig)."""
    if code == 0:
        return "finished", None
    how = end_reason(code, sig) or "no exit status"
    if cancelled:
        return "cancelled", f"cancelled ({how})"
    if requeued:
        return "preempted", f"requeued after SIGUSR2 ({how}); resumes from its checkpoint"
    if code == EXIT_REQUEUE or (is_command and sig is not None):
        return "preempted", f"stopped by SIGTERM ({how}); Slurm requeues or ends it"
    return "failed", how


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

    def __init__(self, job_dir: Path, env: dict | None = None):
        self.job_dir = Path(job_dir).absolute()
        self.env = dict(os.environ if env is None else env)
        self.info = read_json(self.job_dir.parent.parent / "sweep.json") or {}
        self.spec = read_json(self.job_dir / "spec.json")
        if self.spec is None:  # written on first run, from the sweep's one specs.jsonl
            spec = read_specs(self.job_dir.parent.parent).get(self.job_dir.name)
            if spec is not None:
                self.spec = read_json(materialize_job(self.job_dir.parent.parent,
                                                      self.job_dir.name, spec))
        if not isinstance(self.spec, dict):
            raise RuntimeError(f"no readable spec.json in {self.job_dir}")
        self.child: Child | None = None
        self.state: dict = {}
        self.requeued = False
        self.recorded = False

    def cancelled_before_start(self) -> bool:
        """Return whether `launch cancel` marked this job; if so, record it cancelled.

        scancel normally keeps such a task from ever starting, but when it failed (a
        controller that did not answer) Slurm may still start it: it must not run then.
        """
        if not cancel_requested(self.job_dir):
            return False
        prev = read_json(self.job_dir / "state.json") or {}
        runs = int(prev.get("runs") or 0)  # a requeued job ran before: not "before it started"
        atomic_write_json(self.job_dir / "state.json", {
            "state": "cancelled", "runs": runs, "ended": time.time(),
            "slurm_job_id": slurm_job_id(self.env),
            "reason": "cancelled by launch cancel before " + ("its next run" if runs else
                                                              "it started")})
        return True

    def start(self) -> Child:
        """Start the child and write state.json `running`; return the child."""
        share = task_share(allocated_cpus(self.env, self.info), self.spec)
        sweep_id = self.info.get("sweep_id") or self.job_dir.parent.parent.name
        gpus_requested = int((self.info.get("slurm") or {}).get("gpus_per_node") or 0)
        env = task_env(self.env, share, sweep_id, self.job_dir.name, self.job_dir,
                       gpus_requested)
        gpus = allocated_gpus(self.env)
        prev = read_json(self.job_dir / "state.json") or {}
        cwd = self.info.get("cwd")
        cwd = cwd if cwd and os.path.isdir(cwd) else str(self.job_dir)
        argv = job_argv(self.spec, self.job_dir)
        with open(self.job_dir / "stdout.log", "ab") as out:
            out.write(f"[launch] {time.strftime('%Y-%m-%d %H:%M:%S')} slurm job "
                      f"{slurm_job_id(self.env)} on {socket.gethostname()}: "
                      f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r} "
                      f"threads={share.num_threads} workers={share.num_workers}\n".encode())
            out.flush()
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.child = Child(proc)
        self.state = {
            "state": "running",
            "attempt": int(self.env.get("SLURM_RESTART_COUNT") or 0) + 1,
            "runs": int(prev.get("runs") or 0) + 1,
            "pid": proc.pid,
            "host": socket.gethostname(),
            "gpus": gpus,
            "gpu_indices": [int(g) for g in gpus if g.isdigit()],
            "slurm_job_gpus": self.env.get("SLURM_JOB_GPUS"),
            "cpus": share.cpus,
            "num_workers": share.num_workers,
            "num_threads": share.num_threads,
            "started": time.time(),
            "slurm_job_id": slurm_job_id(self.env),
            "reason": None,
        }
        atomic_write_json(self.job_dir / "state.json", self.state)
        return self.child

    def record_end(self, status: int) -> str:
        """Write state.json for the child's exit status (once); return the state."""
        code, sig = (None, -status) if status < 0 else (status, None)
        state, reason = end_state(code, sig, cancel_requested(self.job_dir), self.requeued,
                                  "command" in self.spec)
        if not self.recorded:
            self.recorded = True
            extra = {"log_tail": job_log_tail(self.job_dir)} if state == "failed" else {}
            atomic_write_json(self.job_dir / "state.json", {
                **self.state, "state": state, "ended": time.time(), "exit_code": code,
                "signal": sig, "reason": reason, **extra})
        return state

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
            return "cancelled"
        _CURRENT[str(task.job_dir)] = task
        forward_to_child(task)
        state = task.record_end(task.start().wait())
        if state != "finished":
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
        requeue = status is not None and status != 0 and not cancel_requested(task.job_dir) and (
            status in (EXIT_REQUEUE, -signal.SIGKILL) or "command" in task.spec)
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
    while child.wait(0.2) is None:
        if usr2:
            status = task.stop_for_requeue()
            break
    else:
        status = child.code
    assert status is not None
    if usr2 and status in (EXIT_REQUEUE, -signal.SIGKILL) and not cancel_requested(task.job_dir):
        task.requeued = True
        task.record_end(status)
        return 0 if requeue_self(task.env) else EXIT_REQUEUE
    task.requeued = False
    state = task.record_end(status)
    return 0 if state == "finished" else (status if status > 0 else 1)


if __name__ == "__main__":
    sys.exit(main())
