"""Small, careful helpers for processes this tool starts: identity, signals, dying with a parent."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess

import psutil

PR_SET_PDEATHSIG = 1


def create_time(pid: int) -> float | None:
    """Return when process pid started (seconds since the epoch), or None if it is gone.

    A zombie counts as gone: it has ended, only its parent has not yet asked how.
    """
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():  # one read of /proc/PID/stat for both
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def same_process(pid: int, started: float | None) -> bool:
    """Return whether pid is still the process that started at `started` (not a reused pid)."""
    now = create_time(pid)
    return now is not None and started is not None and abs(now - started) < 1.0


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send sig to a job's process group; return False if the group is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def job_processes(sweep_id: str, job_id: str | None = None) -> dict[str, list[psutil.Process]]:
    """Return the live processes of a sweep's jobs (or of one job), by job id.

    Found by the LAUNCH_SWEEP_ID/LAUNCH_JOB_ID each job's environment carries, so a job's
    children count too, even the ones that left its process group, and even when the job
    started but its supervisor died before recording the pid.
    """
    found: dict[str, list[psutil.Process]] = {}
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if env.get("LAUNCH_SWEEP_ID") != sweep_id:
            continue
        jid = env.get("LAUNCH_JOB_ID")
        if jid and (job_id is None or jid == job_id):
            found.setdefault(jid, []).append(proc)
    return found


def stop_processes(processes: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM the given processes, wait up to grace_s for them to exit, SIGKILL the rest."""
    for proc in processes:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, rest = psutil.wait_procs(processes, timeout=grace_s)
    for proc in rest:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(rest, timeout=5)


def die_with_parent() -> None:
    """In the job's child process: ask the kernel for SIGTERM when the supervisor dies.

    A job must not outlive its supervisor: nobody would record how it ended. It gets the
    SIGTERM a preemption would give, writes its checkpoint, and `--resume` continues it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def pdeathsig_prefix() -> list[str] | None:
    """Return `setpriv --pdeathsig TERM --` where util-linux has it, else None.

    Starting a job through setpriv keeps subprocess on its vfork path; a Python preexec_fn
    forces a full fork of the supervisor and costs several times more per job.
    """
    import shutil

    setpriv = shutil.which("setpriv")
    if not setpriv:
        return None
    try:
        usage = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [setpriv, "--pdeathsig", "TERM", "--"] if "--pdeathsig" in usage.stdout else None
