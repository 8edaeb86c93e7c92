"""A sweep's folder: making it whole, its plan, its specs, cancel marks, its supervisor.

The plan is written once when the sweep is made and read by everything after: the
supervisor, the Slurm tasks, status, results. `SweepInfo` is its record; `resources` and
`slurm` stay plain mappings here and are read back into their typed records by
launcher/config/sweepfile.py, which owns their defaults.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from launcher.errors import UserError
from launcher.machine import foreign
from launcher.machine.leasedir import claim_sweep_id
from launcher.machine.users import current_user
from launcher.rundir.layout import JOB_ID_CHARS, NAME_CHARS, JobPaths, SweepPaths, runs_dir
from launcher.rundir.store import atomic_write_json, read_json, read_jsonl

SWEEP_FORMAT = "launch-sweep/1"


class JobEntry(NamedTuple):
    """One job of the plan: its id and the values its grid axes and point set."""

    id: str
    params: dict


class SweepInfo(NamedTuple):
    """A sweep's plan, as its folder records it."""

    sweep_id: str
    name: str
    executor: str  # local | slurm
    created: float
    user: str
    host: str
    jobs: tuple[JobEntry, ...]
    grid_keys: tuple[str, ...] = ()
    resources: Mapping[str, Any] = {}
    slurm: Mapping[str, Any] = {}
    max_retries: int = 0
    oom_retries: int = 2  # runs again after GPU out-of-memory, not counted in max_retries
    timeout_min: float | None = None
    cwd: str | None = None  # where the jobs run: the folder `launch sweep` was started in
    source: str | None = None  # the sweep file
    notify: Mapping[str, Any] = {}  # who is told when it ends (config/sweepfile.py: Notify)

    @property
    def job_ids(self) -> list[str]:
        return [job.id for job in self.jobs]


def _plan_json(info: SweepInfo, runs: Path) -> dict:
    out = {k: v for k, v in info._asdict().items() if k != "jobs"}
    out.update(format=SWEEP_FORMAT, runs_dir=str(runs), grid_keys=list(info.grid_keys),
               jobs=[{"id": j.id, "params": j.params} for j in info.jobs])
    return out


_JOB_ID = re.compile(f"[{JOB_ID_CHARS}]{{1,200}}")  # what plan ids are made of (config/ids.py)
_SWEEP_ID = re.compile(f"[{NAME_CHARS}]+" r"-\d{8}-\d{6}(?:-\d+)?")  # config/ids.py: make_sweep_id


def parse_info(raw: Any, paths: SweepPaths) -> SweepInfo:
    """Return the plan a plan file holds; UserError naming the file when it holds none.

    The file may be a colleague's (a shared runs folder) or torn: every field is checked,
    text made printable, and what makes no sense is left out or unknown.
    """
    jobs = raw.get("jobs") if isinstance(raw, dict) else None
    if not isinstance(jobs, list):
        raise UserError(f"no sweep {paths.sweep_id!r} in {paths.runs} (see `launch status`)"
                        if raw is None else f"{paths.sweep_json} is not a sweep plan")
    entries = tuple(JobEntry(j["id"], j["params"] if isinstance(j.get("params"), dict) else {})
                    for j in jobs if isinstance(j, dict) and isinstance(j.get("id"), str)
                    and _JOB_ID.fullmatch(j["id"]))

    def text(key: str, default: str) -> str:
        return foreign.text(raw.get(key), default)

    mapping = {k: raw[k] if isinstance(raw.get(k), dict) else {}
               for k in ("resources", "slurm", "notify")}
    executor = raw.get("executor") if raw.get("executor") in ("local", "slurm") else "local"
    return SweepInfo(
        sweep_id=paths.sweep_id, name=text("name", paths.sweep_id), executor=executor,
        created=foreign.number(raw.get("created"), 0.0), user=text("user", "?"),
        host=text("host", "?"), jobs=entries,
        grid_keys=tuple(k for k in raw.get("grid_keys") or () if isinstance(k, str)),
        max_retries=foreign.integer(raw.get("max_retries"), 0, high=1000),
        oom_retries=foreign.integer(raw.get("oom_retries"), 2, high=100),
        timeout_min=foreign.number(raw.get("timeout_min")),
        cwd=raw.get("cwd") if isinstance(raw.get("cwd"), str) else None,
        source=raw.get("source") if isinstance(raw.get("source"), str) else None,
        **mapping)


def read_info(paths: SweepPaths) -> SweepInfo:
    """Return a sweep's plan, or raise UserError naming what is missing."""
    raw = read_json(paths.sweep_json)
    if raw is None:
        try:
            os.stat(paths.sweep_json)
        except PermissionError:
            raise UserError(f"cannot read it: permission denied (its folder belongs to "
                            f"{foreign.user_name(os.lstat(paths.root).st_uid)})") from None
        except OSError:
            pass
    return parse_info(raw, paths)


def new_info(sweep_id: str, name: str, executor: str, jobs: Sequence[JobEntry],
             **fields: Any) -> SweepInfo:
    """Return the plan of a sweep made now by this user on this host."""
    return SweepInfo(sweep_id=sweep_id, name=name, executor=executor, created=time.time(),
                     user=current_user(), host=socket.gethostname(), jobs=tuple(jobs),
                     **fields)


def create_sweep(info: SweepInfo, sweep_yaml: str, specs: Sequence[str],
                 runs: Path | None = None) -> SweepPaths:
    """Return the new sweep folder, written whole: the plan, the resolved file, the specs.

    specs holds each job's spec as JSON text, in the order of info.jobs. They all go into
    one specs file; a job's folder and its own spec file are made when it first runs
    (`materialize_job`, here or on a Slurm node): on a plain disk creating 10,000 folders
    or small files costs seconds, one file costs nothing. The folder is built under a
    hidden name and renamed into place, so a crash never leaves half a sweep; a sweep id
    already taken (the same name started twice within a second) gets a suffix -2, -3, ...
    """
    import tempfile

    runs = runs or runs_dir()
    runs.mkdir(parents=True, exist_ok=True)
    try:
        tmp = SweepPaths(Path(tempfile.mkdtemp(prefix=f".{info.sweep_id}.", dir=runs)))
    except OSError as err:
        raise UserError(f"cannot make a sweep folder in {runs}: {err.strerror}") from None
    try:
        tmp.sweep_yaml.write_text(sweep_yaml)
        with open(tmp.specs_jsonl, "w") as f:
            f.writelines(f'{{"id": {json.dumps(job.id)}, "spec": {text}}}\n'
                         for job, text in zip(info.jobs, specs, strict=True))
        tmp.jobs_dir.mkdir()
        os.chmod(tmp.root, 0o755)
        return _rename_unique(tmp, info, runs)
    except BaseException as err:
        import shutil

        shutil.rmtree(tmp.root, ignore_errors=True)  # half a sweep is no sweep
        if isinstance(err, OSError):
            raise UserError(f"cannot write the sweep folder in {runs}: {err.strerror}") from None
        raise


def _rename_unique(tmp: SweepPaths, info: SweepInfo, runs: Path) -> SweepPaths:
    """Return where tmp went: runs/<sweep id>, or the first free runs/<sweep id>-N."""
    for n in range(1, 1000):
        final = SweepPaths(runs / (info.sweep_id if n == 1 else f"{info.sweep_id}-{n}"))
        if final.root.exists() or not claim_sweep_id(final.sweep_id):
            continue
        plan = _plan_json(info._replace(sweep_id=final.sweep_id), runs)
        tmp.sweep_json.write_text(json.dumps(plan, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(tmp.root, final.root)  # fails if another process won the name
            return final
        except OSError:
            if not final.root.exists():
                raise
    raise UserError(f"too many sweeps named {info.sweep_id} in {runs}")


def update_plan(paths: SweepPaths, changes: Mapping[str, Any], note: str) -> None:
    """Change fields of a sweep's plan (a resume's new max_retries, resources...) in place.

    The resolved sweep file gets a comment saying so: the plan holds the values in force.
    """
    raw = read_json(paths.sweep_json)
    if not isinstance(raw, dict):
        raise UserError(f"{paths.sweep_json} is not a sweep plan")
    atomic_write_json(paths.sweep_json, {**raw, **changes})
    with open(paths.sweep_yaml, "a") as f:
        f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {note}\n")


def read_specs(paths: SweepPaths) -> dict[str, dict]:
    """Return every job's spec of a sweep, by job id, from its one specs file."""
    return {line["id"]: line["spec"] for line in read_jsonl(paths.specs_jsonl)
            if isinstance(line.get("id"), str) and isinstance(line.get("spec"), dict)}


def materialize_job(job: JobPaths, spec: dict) -> Path:
    """Return the job's spec file, writing it (atomically) if the job has none yet."""
    if not job.spec_json.exists():
        job.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(job.spec_json, spec)
    return job.spec_json


def list_sweeps(runs: Path | None = None) -> list[SweepPaths]:
    """Return the sweeps under the runs root, oldest first."""
    runs = runs or runs_dir()
    try:
        names = os.listdir(runs)
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith("."):  # a sweep being written (create_sweep renames it when done)
            continue
        paths = SweepPaths(runs / name)
        try:
            try:
                shown = stat.S_ISREG(os.stat(paths.sweep_json).st_mode)
            except PermissionError:  # a colleague's sweep we may not enter: status says so
                shown = _SWEEP_ID.fullmatch(name) is not None
            if shown:
                found.append((os.stat(paths.root).st_mtime, name, paths))
        except OSError:  # renamed or removed meanwhile
            continue
    return [paths for _, _, paths in sorted(found)]


# -- cancel marks ----------------------------------------------------------------------------

def cancel_mark(paths: SweepPaths, job_id: str | None) -> Path:
    """Return the file whose presence asks to cancel one job, or (job_id None) the sweep."""
    return paths.job(job_id).cancel_mark if job_id else paths.cancel_mark


def request_cancel(paths: SweepPaths, job_id: str | None, grace_s: float) -> None:
    """Ask for a job (or the whole sweep) to be cancelled, SIGKILL coming grace_s after TERM."""
    atomic_write_json(cancel_mark(paths, job_id), {"at": time.time(), "grace_s": grace_s})


def cancel_requested(job: JobPaths) -> float | None:
    """Return the grace in seconds if cancelling this job (or its sweep) was asked, else None."""
    for mark in (job.sweep.cancel_mark, job.cancel_mark):
        if mark.exists():
            request = read_json(mark)
            grace_s = request.get("grace_s") if isinstance(request, dict) else None
            return float(grace_s) if isinstance(grace_s, (int, float)) else 10.0
    return None


def clear_cancel_requests(paths: SweepPaths, job_ids: Sequence[str]) -> None:
    """Remove the cancel requests of a sweep and its jobs, so that they may run again."""
    for job_id in [None, *job_ids]:
        try:
            cancel_mark(paths, job_id).unlink()
        except FileNotFoundError:
            pass


# -- the local supervisor's record -----------------------------------------------------------

class SupervisorInfo(NamedTuple):
    """The supervisor's record: who supervises the sweep here, and the error it stopped on."""

    pid: int
    host: str
    create_time: float | None
    started: float | None = None
    pgid: int | None = None
    error: str | None = None  # a user error that stopped it (shown by status and follow)
    ready: bool = False  # it has read the sweep and checked the machine: it will place jobs


def read_supervisor(paths: SweepPaths) -> SupervisorInfo | None:
    """Return the sweep's supervisor record, or None when it never had one here."""
    raw = read_json(paths.supervisor_json)
    pid = foreign.integer(raw.get("pid"), low=1) if isinstance(raw, dict) else None
    if pid is None:
        return None
    error = raw.get("error")
    return SupervisorInfo(pid=pid, host=foreign.text(raw.get("host")),
                          create_time=foreign.number(raw.get("create_time")),
                          started=foreign.number(raw.get("started")),
                          pgid=foreign.integer(raw.get("pgid"), low=1),
                          error=foreign.text(error, None, limit=2000) if error else None,
                          ready=raw.get("ready") is True)


def write_supervisor(paths: SweepPaths, info: SupervisorInfo) -> None:
    """Record the sweep's supervisor."""
    atomic_write_json(paths.supervisor_json, info._asdict())


def supervisor_alive(paths: SweepPaths) -> bool | None:
    """Return whether the sweep's local supervisor runs; None when it never had one here."""
    info = read_supervisor(paths)
    if info is None or info.host != socket.gethostname():
        return None
    from launcher.machine import procs

    return procs.same_process(info.pid, info.create_time)
