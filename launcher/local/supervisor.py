"""The local executor: one detached process per sweep that queues, places and watches jobs.

`python -m launcher.supervisor SWEEP_DIR` runs until every job of the sweep has ended. It
takes GPU leases and CPU tokens for a job, starts the job in its own process group with the
lease files' descriptors passed down (so the job, not the supervisor, holds them: a killed
supervisor leaves running jobs their GPUs), and wakes on a job's end through a pidfd, not a
polling tick. Everything it knows lives in the run directory, so a new supervisor started by
`launch sweep --resume` takes over where a dead one stopped.
"""

from __future__ import annotations

import errno
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

from launcher import contract
from launcher.config.rules import RulesWatcher
from launcher.config.sweepfile import Resources
from launcher.errors import EXIT_USER_ERROR, UserError
from launcher.local import gpumemory, leftovers, notify, takeover
from launcher.machine import placement, procs
from launcher.machine.users import current_user
from launcher.rundir import state as js
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import (
    JobState,
    Outcome,
    end_of_run,
    read_state,
    run_end,
    write_state,
)
from launcher.rundir.store import LOG_MARK, log_tail
from launcher.rundir.sweepdir import (
    SupervisorInfo,
    cancel_requested,
    materialize_job,
    read_info,
    read_specs,
    read_supervisor,
    write_supervisor,
)
from launcher.show.text import counted, plural

KILL_GRACE_S = 10.0
POLL_S = 2.0  # how often to look at NVML again while a job waits for a GPU


@dataclass
class Running:
    """A job this supervisor started and watches."""

    job_id: str
    pid: int
    pidfd: int
    state: JobState
    proc: subprocess.Popen
    grant: placement.Grant
    deadline: float | None = None
    term_sent: float | None = None
    grace_s: float = KILL_GRACE_S
    outcome: Outcome | None = None  # once its main process has ended
    oom: js.OomEnd | None = None  # how it ran out of GPU memory, if it did
    promised: int | None = None  # the GPU memory its leases say it needs
    stop_by: float | None = None  # SIGKILL what it left after this (monotonic)
    killed: bool = False


def log(msg: str) -> None:
    """Write one timestamped line to the supervisor log (our stdout)."""
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


def lock_supervisor(paths: SweepPaths) -> int | None:
    """Return a descriptor holding the sweep's supervisor lock, or None if another holds it."""
    fd = os.open(paths.supervisor_lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Supervisor:
    """The queue, the running jobs, and the loop that moves jobs from one to the other."""

    def __init__(self, paths: SweepPaths):
        self.paths = paths
        self.info = read_info(paths)
        self.sweep_id = self.info.sweep_id
        self.max_retries = self.info.max_retries
        timeout_min = self.info.timeout_min
        self.timeout_s = None if timeout_min is None else float(timeout_min) * 60
        self.cwd = self.info.cwd or str(paths.root)
        rules = RulesWatcher()  # read again at each placement that finds the file changed
        user = current_user()
        resources = Resources.from_json(self.info.resources)
        self.placer = placement.Placer(self.sweep_id, resources.needs(),
                                       lambda: rules.caps(user))
        self.specs = read_specs(paths)
        self.memory = gpumemory.MemoryBook(
            self.specs, resources.gpu_memory_mib, resources.gpu_memory_margin,
            self.info.oom_retries, user, self.sweep_id, str(paths.root))
        self.selector = selectors.DefaultSelector()
        self.running: dict[int, Running] = {}  # by pidfd
        self.stopping: list[Running] = []  # ended, but processes they left still run
        self.queue: deque[str] = deque()
        self.attempts: dict[str, int] = {}
        self.oom_reruns: dict[str, int] = {}  # attempts that were oom retries: not max_retries
        self.waiting: tuple[str, float, str | None] | None = None  # job, since, reason written
        self.prefix = procs.pdeathsig_prefix()
        self.cancel_checked = 0.0
        self.notifier = notify.Notifier(paths, self.info, log)

    # -- state ------------------------------------------------------------------------------
    def state(self, job_id: str) -> JobState:
        return read_state(self.paths.job(job_id))

    def write(self, job_id: str, state: JobState) -> None:
        write_state(self.paths.job(job_id), state)
        self.notifier.job_state(job_id, state)  # a failure may be news (local/notify.py)

    def load_queue(self) -> None:
        """Queue every job that has not ended; stop what a dead supervisor left behind."""
        states = {job_id: self.state(job_id) for job_id in self.info.job_ids}
        stale = takeover.left_running(self.paths, states)
        if stale:
            log(f"stopping {len(stale)} processes left by an earlier supervisor")
            procs.stop_processes(stale, KILL_GRACE_S)
        for job_id, st in states.items():
            self.memory.load(job_id, st)
            if st.state in js.ENDED_STATES:
                continue
            ended = takeover.known_end(self.paths, job_id, st)
            if ended is not None:
                self.end(job_id, st, *ended)
            else:
                self.queue.append(job_id)

    def watch(self, run: Running) -> None:
        self.running[run.pidfd] = run
        self.selector.register(run.pidfd, selectors.EVENT_READ)
        if self.timeout_s is not None:
            run.deadline = (run.state.started or time.time()) + self.timeout_s

    # -- starting ---------------------------------------------------------------------------
    def cancelled(self, job_id: str) -> float | None:
        return cancel_requested(self.paths.job(job_id))

    def drop_cancelled(self) -> None:
        """Take jobs whose cancelling was asked out of the queue (at most every POLL_S)."""
        now = time.monotonic()
        if now - self.cancel_checked < POLL_S:
            return
        self.cancel_checked = now
        for job_id in [j for j in self.queue if self.cancelled(j) is not None]:
            self.queue.remove(job_id)
            self.end(job_id, self.state(job_id), js.CANCELLED, reason=js.CANCELLED_BEFORE_START)

    def dispatch(self) -> None:
        """Start queued jobs, in order, while resources last."""
        self.drop_cancelled()
        if not self.queue:
            self.placer.close()  # nothing waits: other sweeps must not leave GPUs to us
        while self.queue:
            job_id = self.queue[0]
            if self.cancelled(job_id) is not None:
                self.queue.popleft()
                self.end(job_id, self.state(job_id), js.CANCELLED,
                         reason=js.CANCELLED_BEFORE_START)
                continue
            spec = self.specs.get(job_id)
            if spec is None:  # a torn or edited specs file: this job cannot run, the rest can
                self.queue.popleft()
                self.end(job_id, self.state(job_id), js.FAILED,
                         reason="its spec is missing from the sweep's specs file")
                continue
            grant = self.placer.grant(job_id, spec, self.memory.need(job_id))
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
            self.write(job_id, self.memory.waiting(job_id, self.state(job_id), reason))
            log(f"waiting: {reason}")

    def start(self, job_id: str, spec: dict, grant: placement.Grant) -> None:
        job = self.paths.job(job_id)
        if "command" in spec:  # its argv says it all; no spec file to write
            job.dir.mkdir(exist_ok=True)
            spec_path = None
        else:
            spec_path = materialize_job(job, spec)
        prev = self.state(job_id)
        env = contract.job_env(os.environ, sweep_id=self.sweep_id, job_id=job_id, job_dir=job.dir,
                               num_workers=grant.share.num_workers,
                               num_threads=grant.share.num_threads, gpus=grant.uuids,
                               seed=contract.job_seed(spec), master_port=grant.master_port)
        argv = contract.job_argv(spec, spec_path, job.dir)
        with open(job.stdout_log, "ab") as out:
            if prev.runs:  # where one run's output ends and the next one's begins
                out.write(f"{LOG_MARK} {time.strftime('%Y-%m-%d %H:%M:%S')} run {prev.runs + 1} "
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
                self.end(job_id, prev, js.FAILED, reason=f"could not start {argv[0]!r}: {err}")
                return
        self.waiting = None
        # A retry keeps the failed attempt's last lines, so a follower that never saw the
        # short `pending` between the attempts can still show why it was retried.
        tail = prev.log_tail if self.attempts.get(job_id) else None
        self.attempts[job_id] = self.attempts.get(job_id, 0) + 1
        st = JobState(
            state=js.RUNNING, attempt=self.attempts[job_id], runs=prev.runs + 1, log_tail=tail,
            pid=proc.pid, pgid=proc.pid, pid_create_time=procs.create_time(proc.pid),
            host=socket.gethostname(), started=time.time(), **grant.record(),
            **js.carried_memory(prev))
        self.write(job_id, st)
        grant.handed_to(proc.pid)
        run = Running(job_id, proc.pid, os.pidfd_open(proc.pid), st, proc, grant,
                      promised=self.memory.need(job_id).bytes)
        self.watch(run)
        self.memory.started(job_id, proc.pid, grant.uuids, ",".join(map(str, grant.gpu_indices)))
        log(f"start {job_id} {grant.describe()} (attempt {st.attempt}, pid {proc.pid})")

    # -- ending -----------------------------------------------------------------------------
    def stopped(self, run: Running) -> str | None:
        """Return what stopped a run from outside (launcher/rundir/state.py: STOP_*)."""
        if self.cancelled(run.job_id) is not None:
            return js.STOP_CANCEL
        if run.term_sent and run.deadline and time.time() >= run.deadline:
            return js.STOP_TIMEOUT
        return None

    def reap(self, run: Running) -> None:
        """Note a job's main process's end; finish the job once nothing it started runs."""
        self.selector.unregister(run.pidfd)
        os.close(run.pidfd)
        del self.running[run.pidfd]
        code, sig = self.exit_status(run)
        # EXIT_REQUEUE (a checkpoint written after a SIGTERM nobody here sent) is retried like
        # any failure, within max_retries: a script that always exits so must not loop forever.
        # Out-of-memory retries are counted apart (oom_retries).
        retries_left = self.max_retries - (self.attempts.get(run.job_id, 1) - 1 -
                                           self.oom_reruns.get(run.job_id, 0))
        stopped = self.stopped(run)
        tail = log_tail(self.paths.job(run.job_id).stdout_log) if code != contract.EXIT_OK \
            and stopped is None else ""
        run.oom = self.memory.oom_end(run.job_id, code, stopped, tail)
        run.outcome = end_of_run(code, sig, stopped, retries_left, run.oom)
        run.state = run.state._replace(exit_code=code, signal=sig, ended=time.time())
        left = leftovers.leftovers(self.sweep_id, str(self.paths.root), run.job_id, run.pid)
        if not left and not leftovers.group_alive(run.pid):
            self.finish(run)
            return
        leftovers.signal_all(left, run.pid, signal.SIGTERM)
        run.stop_by = time.monotonic() + KILL_GRACE_S
        self.stopping.append(run)
        self.write(run.job_id, run.state._replace(
            state=js.STOPPING, reason=f"its main process ended ({run_end(code, sig)}); "
            f"stopping {len(left) or 'the'} process{'es' * (len(left) != 1)} it left"))
        log(f"stopping {run.job_id}: {len(left)} processes it left outlive it")

    def tend_stopping(self) -> None:
        """Finish the stopping jobs whose leftovers are gone; SIGKILL them after the grace."""
        procs.reap_orphans(run.pid for run in self.running.values())
        for run in list(self.stopping):
            left = leftovers.leftovers(self.sweep_id, str(self.paths.root), run.job_id, run.pid)
            if not left and not leftovers.group_alive(run.pid):
                self.stopping.remove(run)
                self.finish(run)
            elif not run.killed and time.monotonic() >= (run.stop_by or 0):
                leftovers.signal_all(left, run.pid, signal.SIGKILL)
                run.killed = True

    def finish(self, run: Running) -> None:
        """Record how a job ended, give its GPUs and CPUs back, queue it again for a retry."""
        outcome = run.outcome
        assert outcome is not None
        run.grant.release()
        self.placer.released(run.job_id)
        self.placer.refresh()
        failed = outcome.state == js.FAILED or outcome.retry
        tail = log_tail(self.paths.job(run.job_id).stdout_log) if failed else None
        code, sig = run.state.exit_code, run.state.signal
        word = outcome.state if outcome.state == js.OOM or not outcome.retry else js.FAILED
        log(f"{word} {run.job_id} ({run_end(code, sig)})" +
            (", will retry" if outcome.retry else ""))
        st = run.state._replace(state=outcome.state, reason=outcome.reason, log_tail=tail)
        self.write(run.job_id, self.memory.ended(run.job_id, st, outcome, run.oom))
        if outcome.state == js.OOM:
            self.oom_reruns[run.job_id] = self.oom_reruns.get(run.job_id, 0) + 1
        if outcome.retry:
            self.queue.append(run.job_id)

    def exit_status(self, run: Running) -> tuple[int | None, int | None]:
        code = run.proc.wait()
        return (None, -code) if code < 0 else (code, None)

    def end(self, job_id: str, prev: JobState, state: str, reason: str | None = None) -> None:
        """Record that a job ended without a run of its own (cancelled before start, ...)."""
        self.write(job_id, prev._replace(state=state, reason=reason, ended=time.time()))

    def enforce(self, now: float) -> None:
        """Stop jobs past their timeout or cancelled: SIGTERM, then SIGKILL after a grace."""
        for run in self.running.values():
            if run.term_sent is not None:
                if now - run.term_sent > run.grace_s:
                    procs.signal_group(run.pid, signal.SIGKILL)
                continue
            overdue = run.deadline is not None and now >= run.deadline
            grace_s = self.cancelled(run.job_id)
            if overdue or grace_s is not None:
                procs.signal_group(run.pid, signal.SIGTERM)
                run.term_sent, run.grace_s = now, KILL_GRACE_S if grace_s is None else grace_s
                log(f"SIGTERM {run.job_id}: " + ("timeout" if overdue else "cancelled"))

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        self.load_queue()
        log(f"sweep {self.sweep_id}: {plural(len(self.queue), 'job')} to run")
        while self.queue or self.running or self.stopping:
            self.dispatch()
            # A job's end wakes us at once (pidfd); the timeout only paces NVML re-checks,
            # cancel requests, timeouts and what stopping jobs left.
            for key, _ in self.selector.select(0.1 if self.stopping else POLL_S / 2):
                self.reap(self.running[key.fd])
            if self.placer.want and self.running:
                self.memory.tend(list(self.running.values()), self.placer.snapshot, self.write)
            self.enforce(time.time())
            if self.stopping:
                self.tend_stopping()
        self.placer.close()
        states = sorted(self.state(job_id).state for job_id in self.info.job_ids)
        log(f"sweep ended: {counted(states)}")
        self.notifier.sweep_ended(states)
        return 0


def main(argv: list[str] | None = None) -> int:
    """Supervise one sweep until all its jobs end; exit 3 if another supervisor has it.

    A user error met on the way (an unsafe lease directory, a machine that lost its driver)
    is recorded in the supervisor's record, where `launch status` and the follower show it, and
    exits 2 without a traceback.
    """
    argv = sys.argv[1:] if argv is None else argv
    paths = SweepPaths(Path(argv[0]).absolute())
    # The SSH session may go; we stay. A handler, not SIG_IGN: an ignored signal stays
    # ignored in the jobs we exec, a handled one is reset to its default there.
    signal.signal(signal.SIGHUP, lambda *_: None)
    lock_fd = lock_supervisor(paths)
    procs.become_subreaper()  # a job's orphans come to us, not init: they are found and stopped
    if lock_fd is None:
        log("another supervisor runs this sweep; leaving it alone")
        return 3
    record = SupervisorInfo(pid=os.getpid(), host=socket.gethostname(),
                            create_time=procs.create_time(os.getpid()), started=time.time(),
                            pgid=os.getpgrp())
    write_supervisor(paths, record)
    try:
        supervisor = Supervisor(paths)
        record = record._replace(ready=True)
        write_supervisor(paths, record)
        return supervisor.run()
    except UserError as err:
        return stopped_on(paths, record, str(err), err.exit_code)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        return stopped_on(paths, record, f"cannot write in {err.filename or paths.root}: "
                          f"{err.strerror}", EXIT_USER_ERROR)


def stopped_on(paths: SweepPaths, record: SupervisorInfo, error: str, code: int) -> int:
    """Record the error the supervisor stops on, where status and follow show it."""
    log(f"stopped: {error}")
    notify.supervisor_stopped(paths, error, log)
    try:
        if read_supervisor(paths) == record:  # still ours: a resume may have replaced it
            write_supervisor(paths, record._replace(error=error))
    except OSError:
        pass  # a full disk: its log line (if that could be written) is all there is
    return code


if __name__ == "__main__":
    sys.exit(main())
