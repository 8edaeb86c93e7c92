"""Processes this tool starts: identity, signals, dying with a parent, and what a job leaves.

A job is a process tree: its main process, whatever it starts, and whatever those start in
sessions of their own. Every process of a job carries the job's LAUNCH_SWEEP_ID,
LAUNCH_JOB_ID and LAUNCH_JOB_DIR in its environment (launcher/contract.py), unless it cleared
them; the supervisor is a child subreaper, so a child that outlives its parent is reparented
to the supervisor rather than to init. Between the two, what a job leaves behind is found
(`job_leftovers`) and stopped before its GPUs and CPUs go to another job.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

from launcher import contract

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def create_time(pid: int) -> float | None:
    """Return when process pid started (seconds since the epoch), or None if it is gone.

    A zombie counts as gone: it has ended, only its parent has not yet asked how.
    """
    import psutil

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


def _environ(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return None  # gone, a zombie, or not ours to read


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def _job_of(env: bytes, sweep_id: str, sweep_root: str) -> str | None:
    """Return the job id an environment names, if it is a job of this sweep folder."""
    values = dict(item.partition(b"=")[::2] for item in env.split(b"\0") if b"=" in item)
    job_id = values.get(contract.ENV_JOB_ID.encode())
    job_dir = values.get(contract.ENV_JOB_DIR.encode(), b"").decode(errors="replace")
    if values.get(contract.ENV_SWEEP_ID.encode()) != sweep_id.encode() or not job_id:
        return None
    # The id alone is not enough: two runs folders may each hold a sweep of that id.
    if not job_dir.startswith(sweep_root.rstrip("/") + "/"):
        return None
    return job_id.decode(errors="replace")


def _own_pids(newer_than: int = 0) -> list[int]:
    """Return the pids of this user's live processes, those after pid newer_than if it can."""
    try:
        with open("/proc/sys/kernel/ns_last_pid") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 0
    if last < newer_than:  # pids wrapped around since: every process may be newer
        newer_than = 0
    uid, out = os.getuid(), []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit() or int(entry.name) < newer_than:
                continue
            try:
                if entry.stat().st_uid == uid:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def job_processes(sweep_id: str, sweep_root: str, job_id: str | None = None,
                  newer_than: int = 0) -> dict[str, list[int]]:
    """Return the live pids of a sweep's jobs (or of one job), by job id.

    Found by the environment each job's processes carry, so a job's children count too,
    even the ones that left its process group or session, and even when the job started but
    its supervisor died before recording its pid. newer_than narrows the search to processes
    started after that pid was (a job's processes all were started after the job).
    """
    found: dict[str, list[int]] = {}
    for pid in _own_pids(newer_than):
        env = _environ(pid)
        jid = _job_of(env, sweep_id, sweep_root) if env else None
        if jid and (job_id is None or jid == job_id) and not _zombie(pid):
            found.setdefault(jid, []).append(pid)
    return found


def job_of_pid(pid: int, sweep_id: str, sweep_root: str) -> str | None:
    """Return the job of this sweep folder whose environment process pid carries, if any."""
    env = _environ(pid)
    return _job_of(env, sweep_id, sweep_root) if env else None


def parent(pid: int) -> int | None:
    """Return the parent of process pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    """Return the children of pid (of every thread), or [] if that cannot be read."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue
    return out


def reap_orphans(keep: Iterable[int]) -> None:
    """Reap the ended children that were reparented to us (a subreaper), but those in keep."""
    keep = set(keep)
    for pid in children(os.getpid()):
        if pid not in keep and _zombie(pid):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def become_subreaper() -> bool:
    """Make the orphans of our children ours rather than init's; return whether it worked."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def send(pids: Iterable[int], sig: signal.Signals) -> None:
    """Send sig to each pid that still exists."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_processes(pids: list[int], grace_s: float) -> None:
    """SIGTERM the given processes, wait up to grace_s for them to exit, SIGKILL the rest."""
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, rest = psutil.wait_procs(procs, timeout=grace_s)
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
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def pdeathsig_prefix() -> list[str] | None:
    """Return `setpriv --pdeathsig TERM --` where util-linux has it, else None.

    Starting a job through setpriv keeps subprocess on its vfork path; a Python preexec_fn
    forces a full fork of the supervisor and costs several times more per job.
    """
    import shutil
    import subprocess

    setpriv = shutil.which("setpriv")
    if not setpriv:
        return None
    try:
        usage = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [setpriv, "--pdeathsig", "TERM", "--"] if "--pdeathsig" in usage.stdout else None
