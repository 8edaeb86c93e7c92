"""The local executor: one detached process per sweep that queues, places and watches jobs.

`python -m launcher.supervisor SWEEP_DIR` runs until every job of the sweep has ended. It
takes GPU leases and CPU tokens for a job, starts the job in its own process group with the
lease files' descriptors passed down (so the job, not the supervisor, holds them: a killed
supervisor leaves running jobs their GPUs), and wakes on a job's end through a pidfd, not a
polling tick. Everything it knows lives in the run directory, so a new supervisor started by
`launch sweep --resume` takes over where a dead one stopped.
"""

from __future__ import annotations

import fcntl
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from launcher import placement, procs, rundir, views
from launcher.logs import job_log_tail
from launcher.rundir import atomic_write_json, read_json

EXIT_REQUEUE = 75  # the job wrote its checkpoint after SIGTERM/SIGUSR2 (jobs/__main__.py)
KILL_GRACE_S = 10.0
POLL_S = 2.0  # how often to look at NVML again while a job waits for a GPU


@dataclass
class Running:
    """A job this supervisor started and watches."""

    job_id: str
    pid: int
    pidfd: int
    state: dict
    proc: subprocess.Popen
    deadline: float | None = None
    term_sent: float | None = None
    grace_s: float = KILL_GRACE_S


def log(msg: str) -> None:
    """Write one timestamped line to the supervisor log (our stdout)."""
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


def lock_supervisor(path: Path) -> int | None:
    """Return a descriptor holding the sweep's supervisor lock, or None if another holds it."""
    fd = os.open(path / "supervisor.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def job_argv(spec: dict, spec_path: Path | None, out: Path) -> list[str]:
    """Return the argv of a job: its own command, or the built-in training job."""
    if "command" in spec:
        return [str(a) for a in spec["command"]]
    return [sys.executable, "-m", "jobs", str(spec_path), "--out", str(out)]


class Supervisor:
    """The queue, the running jobs, and the loop that moves jobs from one to the other."""

    def __init__(self, path: Path):
        self.path = path
        self.info = read_json(path / "sweep.json")
        self.sweep_id = self.info["sweep_id"]
        self.resources = self.info.get("resources", {})
        self.max_retries = int(self.info.get("max_retries", 0))
        timeout_min = self.info.get("timeout_min")
        self.timeout_s = None if timeout_min is None else float(timeout_min) * 60
        self.cwd = self.info.get("cwd") or str(path)
        self.placer = placement.Placer(self.sweep_id, self.resources)
        self.selector = selectors.DefaultSelector()
        self.running: dict[int, Running] = {}  # by pidfd
        self.queue: deque[str] = deque()
        self.attempts: dict[str, int] = {}
        self.waiting: tuple[str, float, str | None] | None = None  # job, since, reason written
        self.prefix = procs.pdeathsig_prefix()
        self.specs = rundir.read_specs(path)
        self.cancel_checked = 0.0

    # -- state ------------------------------------------------------------------------------
    def state(self, job_id: str) -> dict:
        return rundir.read_job_state(self.sweep_id, job_id, self.path.parent)

    def write(self, job_id: str, state: dict) -> None:
        rundir.write_job_state(self.sweep_id, job_id, state, self.path.parent)

    def load_queue(self) -> None:
        """Queue every job that has not ended; stop what a dead supervisor left behind."""
        states = {job["id"]: self.state(job["id"]) for job in self.info["jobs"]}
        # Jobs are told to die with their supervisor, but their children may linger and
        # still hold the job's leases: a second copy must never run beside them.
        # A job's folder is made just before it starts, so a sweep with none never ran a
        # job, even one whose supervisor died before it could record the start.
        with os.scandir(self.path / "jobs") as entries:
            ever_started = any(entries)
        leftovers = procs.job_processes(self.sweep_id) if ever_started else {}
        stale = [p for job_id, ps in leftovers.items()
                 if states.get(job_id, {}).get("state") not in rundir.ENDED_STATES for p in ps]
        if stale:
            log(f"stopping {len(stale)} processes left by an earlier supervisor")
            procs.stop_processes(stale, KILL_GRACE_S)
        for job_id, st in states.items():
            if st["state"] in rundir.ENDED_STATES:
                continue
            result = read_json(self.path / "jobs" / job_id / "result.json") or {}
            if result.get("status") == "finished":
                # It ended while no supervisor watched; its own result says how.
                self.end(job_id, st, "finished", reason="finished while unsupervised")
                continue
            self.queue.append(job_id)

    def watch(self, run: Running) -> None:
        self.running[run.pidfd] = run
        self.selector.register(run.pidfd, selectors.EVENT_READ)
        if self.timeout_s is not None:
            run.deadline = (run.state.get("started") or time.time()) + self.timeout_s

    # -- starting ---------------------------------------------------------------------------
    def drop_cancelled(self) -> None:
        """Take jobs whose cancelling was asked out of the queue (at most every POLL_S)."""
        now = time.monotonic()
        if now - self.cancel_checked < POLL_S:
            return
        self.cancel_checked = now
        for job_id in [j for j in self.queue if rundir.cancel_requested(self.path, j) is not None]:
            self.queue.remove(job_id)
            self.end(job_id, self.state(job_id), "cancelled", reason="cancelled before start")

    def dispatch(self) -> None:
        """Start queued jobs, in order, while resources last."""
        self.drop_cancelled()
        if not self.queue:
            self.placer.close()  # nothing waits: other sweeps must not leave GPUs to us
        while self.queue:
            job_id = self.queue[0]
            if rundir.cancel_requested(self.path, job_id) is not None:
                self.queue.popleft()
                self.end(job_id, self.state(job_id), "cancelled", reason="cancelled before start")
                continue
            spec = self.specs[job_id]
            grant = self.placer.grant(job_id, spec)
            if isinstance(grant, str):
                self.note_waiting(job_id, grant)
                return
            self.queue.popleft()
            self.start(job_id, spec, grant)

    def note_waiting(self, job_id: str, reason: str) -> None:
        """Record why the head of the queue waits, once it has waited a moment.

        Most waits end when the next job ends, a fraction of a second later; writing them
        all down would cost a state write per job for nothing anyone could read.
        """
        now = time.monotonic()
        if self.waiting is None or self.waiting[0] != job_id:
            self.waiting = (job_id, now, None)
            return
        _, since, written = self.waiting
        if reason != written and now - since >= POLL_S / 2:
            self.waiting = (job_id, since, reason)
            self.write(job_id, {**self.state(job_id), "state": "waiting", "reason": reason})
            log(f"waiting: {reason}")

    def start(self, job_id: str, spec: dict, grant: placement.Grant) -> None:
        job_path = self.path / "jobs" / job_id
        if "command" in spec:  # its argv says it all; no spec.json to write
            job_path.mkdir(exist_ok=True)
            spec_path = None
        else:
            spec_path = rundir.materialize_job(self.path, job_id, spec)
        prev = self.state(job_id)
        env = {
            **os.environ,
            **grant.env,
            "LAUNCH_SWEEP_ID": self.sweep_id,
            "LAUNCH_JOB_ID": job_id,
            "LAUNCH_JOB_DIR": str(job_path),
        }
        argv = job_argv(spec, spec_path, job_path)
        runs = prev.get("runs", 0)
        with open(job_path / "stdout.log", "ab") as out:
            if runs:  # where one run's output ends and the next one's begins
                out.write(f"[launch] {time.strftime('%Y-%m-%d %H:%M:%S')} run {runs + 1} "
                          f"starts, {grant.describe()}\n".encode())
                out.flush()
            try:
                proc = subprocess.Popen(
                    (self.prefix or []) + argv, cwd=self.cwd, env=env,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, pass_fds=grant.fds(),
                    preexec_fn=None if self.prefix else procs.die_with_parent,
                )
            except OSError as err:
                grant.release()
                self.placer.released(job_id)
                self.end(job_id, prev, "failed", reason=f"could not start {argv[0]!r}: {err}")
                return
        self.waiting = None
        # A retry keeps the failed attempt's last lines, so a follower that never saw the
        # short `pending` between the attempts can still show why it was retried.
        failed = {"log_tail": prev["log_tail"]} \
            if self.attempts.get(job_id) and prev.get("log_tail") else {}
        self.attempts[job_id] = self.attempts.get(job_id, 0) + 1
        st = {
            "state": "running",
            "attempt": self.attempts[job_id],
            "runs": runs + 1,
            **failed,
            "pid": proc.pid,
            "pgid": proc.pid,
            "pid_create_time": procs.create_time(proc.pid),
            "host": socket.gethostname(),
            "started": time.time(),
            **grant.record(),
        }
        self.write(job_id, st)
        grant.handed_to(proc.pid)
        run = Running(job_id, proc.pid, os.pidfd_open(proc.pid), st, proc)
        self.watch(run)
        log(f"start {job_id} {grant.describe()} (attempt {st['attempt']}, pid {proc.pid})")

    # -- ending -----------------------------------------------------------------------------
    def reap(self, run: Running) -> None:
        """Record a job's end and decide whether it runs again."""
        self.selector.unregister(run.pidfd)
        os.close(run.pidfd)
        del self.running[run.pidfd]
        # What the job left behind in its group would keep its leases; the unreaped leader
        # still pins the group id, so this cannot hit a stranger's group.
        procs.signal_group(run.pid, signal.SIGKILL)
        code, sig = self.exit_status(run)
        self.placer.released(run.job_id)
        self.placer.refresh()
        job_path = self.path / "jobs" / run.job_id
        state = "finished" if code == 0 else "failed"
        if state != "finished" and rundir.cancel_requested(self.path, run.job_id) is not None:
            state = "cancelled"
        elif state != "finished" and run.term_sent and run.deadline and time.time() >= run.deadline:
            state = "timeout"
        extra = {"exit_code": code, "signal": sig}
        if state == "failed":
            extra["log_tail"] = job_log_tail(job_path)
        # Exit 75 (checkpoint written after a SIGTERM nobody here sent) is retried like any
        # failure, within max_retries: a script that always exits 75 must not loop forever.
        retry = state == "failed" and self.attempts.get(run.job_id, 1) <= self.max_retries
        how = views.end_reason(code, sig) or "no exit status"
        if code == EXIT_REQUEUE:
            how += ", checkpoint written"
        log(f"{state} {run.job_id} ({how})" + (", will retry" if retry else ""))
        if retry:
            self.write(run.job_id, {**run.state, "state": "pending", "ended": time.time(),
                                    "reason": f"{views.RETRY_REASON} {how}", **extra})
            self.queue.append(run.job_id)
        else:
            # A retried job carried its failed attempt's tail; an end that is no failure drops it.
            last = {k: v for k, v in run.state.items() if k != "log_tail" or state == "failed"}
            self.end(run.job_id, last, state, **extra)

    def exit_status(self, run: Running) -> tuple[int | None, int | None]:
        code = run.proc.wait()
        return (None, -code) if code < 0 else (code, None)

    def end(self, job_id: str, prev: dict, state: str, **extra) -> None:
        self.write(job_id, {**prev, "state": state, "ended": time.time(), **extra})

    def enforce(self, now: float) -> None:
        """Stop jobs past their timeout or cancelled: SIGTERM, then SIGKILL after a grace."""
        for run in self.running.values():
            if run.term_sent is not None:
                if now - run.term_sent > run.grace_s:
                    procs.signal_group(run.pid, signal.SIGKILL)
                continue
            overdue = run.deadline is not None and now >= run.deadline
            grace_s = rundir.cancel_requested(self.path, run.job_id)
            if overdue or grace_s is not None:
                procs.signal_group(run.pid, signal.SIGTERM)
                run.term_sent, run.grace_s = now, KILL_GRACE_S if grace_s is None else grace_s
                log(f"SIGTERM {run.job_id}: " + ("timeout" if overdue else "cancelled"))

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        self.load_queue()
        log(f"sweep {self.sweep_id}: {len(self.queue)} job{'s' * (len(self.queue) != 1)} to run")
        while self.queue or self.running:
            self.dispatch()
            # A job's end wakes us at once (pidfd); the timeout only paces NVML re-checks,
            # cancel requests and timeouts.
            for key, _ in self.selector.select(POLL_S / 2):
                self.reap(self.running[key.fd])
            self.enforce(time.time())
        self.placer.close()
        counts = views.load_sweep_view(self.sweep_id, self.path.parent).counts()
        log("sweep ended: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        return 0


def main(argv: list[str] | None = None) -> int:
    """Supervise one sweep until all its jobs end; exit 3 if another supervisor has it."""
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]).absolute()
    # The SSH session may go; we stay. A handler, not SIG_IGN: an ignored signal stays
    # ignored in the jobs we exec, a handled one is reset to its default there.
    signal.signal(signal.SIGHUP, lambda *_: None)
    lock_fd = lock_supervisor(path)
    if lock_fd is None:
        log("another supervisor runs this sweep; leaving it alone")
        return 3
    atomic_write_json(path / "supervisor.json", {
        "pid": os.getpid(), "pgid": os.getpgrp(), "host": socket.gethostname(),
        "started": time.time(), "create_time": procs.create_time(os.getpid()),
    })
    return Supervisor(path).run()


if __name__ == "__main__":
    sys.exit(main())
