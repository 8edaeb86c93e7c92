"""The run directory: where a sweep's plan, state, logs and results live as plain files.

Layout (DESIGN.md): runs/<sweep-id>/{sweep.yaml, sweep.json, supervisor.json, supervisor.log}
and runs/<sweep-id>/jobs/<job-id>/{spec.json, state.json, stdout.log, metrics.jsonl,
result.json, checkpoint.pt}. Plain files, not a database, because Slurm jobs on other nodes
write them over NFS; every state write is a temp file plus rename so a reader never sees half.
What status and follow show of these files (SweepView, JobView) is read in `views.py`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.errors import UserError

SWEEP_FORMAT = "launch-sweep/1"
ENDED_STATES = ("finished", "failed", "cancelled", "timeout")
STATES = ("pending", "waiting", "running", "preempted", *ENDED_STATES)


def runs_dir() -> Path:
    """Return the runs root: $LAUNCH_RUNS_DIR, or ./runs."""
    return Path(os.environ.get("LAUNCH_RUNS_DIR") or "runs").absolute()


def sweep_dir(sweep_id: str, root: Path | None = None) -> Path:
    """Return the folder of one sweep."""
    return (root or runs_dir()) / sweep_id


def job_dir(sweep_id: str, job_id: str, root: Path | None = None) -> Path:
    """Return the folder of one job of a sweep."""
    return sweep_dir(sweep_id, root) / "jobs" / job_id


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path so that readers see the old file or the new one, never half."""
    import tempfile  # here, not at the top: `launch status` never writes

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except FileNotFoundError:  # a job's folder is made when it is first written to
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write obj as JSON to path atomically."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    """Return the JSON in path, or default when it is missing or not (yet) valid."""
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return default


def read_last_jsonl(path: Path) -> dict | None:
    """Return the last complete JSON line of a .jsonl file, or None."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def read_jsonl(path: Path) -> list[dict]:
    """Return every complete JSON line of a .jsonl file (a torn last line is skipped)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def create_sweep(
    sweep_id: str,
    sweep_yaml: str,
    meta: dict,
    jobs: Sequence[tuple[str, dict, str | dict]],
    root: Path | None = None,
) -> Path:
    """Return the new sweep folder, written whole: the plan and the resolved file.

    jobs holds (job_id, params, spec as JSON text or a dict). Every spec goes into one
    specs.jsonl; a job's folder and its spec.json are made when it first runs
    (`materialize_job`, here or on a Slurm node) or its state is first written: on a plain
    disk creating 10,000 folders or small files costs seconds, one file costs nothing. The
    folder is built under a hidden name and renamed into place, so a crash never leaves half
    a sweep; a sweep id already taken (the same name started twice within a second) gets a
    suffix -2, -3, ...
    """
    import tempfile

    root = root or runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(j, p, t if isinstance(t, str) else json.dumps(t, sort_keys=True)) for j, p, t in jobs]
    tmp = Path(tempfile.mkdtemp(prefix=f".{sweep_id}.", dir=root))
    (tmp / "sweep.yaml").write_text(sweep_yaml)
    info = {
        "format": SWEEP_FORMAT,
        "sweep_id": sweep_id,
        "created": time.time(),
        "user": current_user(),
        "host": socket.gethostname(),
        "runs_dir": str(root),
        **meta,
        "jobs": [{"id": job_id, "params": params} for job_id, params, _ in jobs],
    }
    (tmp / "sweep.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    with open(tmp / "specs.jsonl", "w") as f:
        f.writelines(f'{{"id": {json.dumps(job_id)}, "spec": {text}}}\n'
                     for job_id, _, text in jobs)
    (tmp / "jobs").mkdir()
    os.chmod(tmp, 0o755)
    return rename_unique(tmp, root, sweep_id)


def rename_unique(tmp: Path, root: Path, sweep_id: str) -> Path:
    """Return where tmp was renamed to: root/sweep_id, or the first free root/sweep_id-N."""
    for n in range(1, 1000):
        final = root / (sweep_id if n == 1 else f"{sweep_id}-{n}")
        if final.exists():
            continue
        info = json.loads((tmp / "sweep.json").read_text())
        if info["sweep_id"] != final.name:
            info["sweep_id"] = final.name
            (tmp / "sweep.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(tmp, final)  # fails (ENOTEMPTY/EEXIST) if another process won the name
            return final
        except OSError:
            if not final.exists():
                raise
    raise UserError(f"too many sweeps named {sweep_id} in {root}")


def read_specs(sweep_path: Path) -> dict[str, dict]:
    """Return every job's spec of a sweep, by job id, from its specs.jsonl."""
    return {line["id"]: line["spec"] for line in read_jsonl(sweep_path / "specs.jsonl")}


def materialize_job(sweep_path: Path, job_id: str, spec: dict) -> Path:
    """Return the job's spec.json, writing it (atomically) if the job has none yet."""
    path = sweep_path / "jobs" / job_id / "spec.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, spec)
    return path


def current_user() -> str:
    """Return the login name of this process's user."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def read_sweep_info(sweep_id: str, root: Path | None = None) -> dict:
    """Return a sweep's sweep.json, or raise UserError naming what is missing."""
    path = sweep_dir(sweep_id, root) / "sweep.json"
    info = read_json(path)
    if info is None:
        raise UserError(f"no sweep {sweep_id!r} in {path.parent.parent} (see `launch status`)")
    return info


def read_job_state(sweep_id: str, job_id: str, root: Path | None = None) -> dict:
    """Return a job's state.json; a job with none is pending."""
    return read_json(job_dir(sweep_id, job_id, root) / "state.json") or {"state": "pending"}


def write_job_state(sweep_id: str, job_id: str, state: dict, root: Path | None = None) -> None:
    """Write a job's state.json atomically."""
    assert state.get("state") in STATES, state
    atomic_write_json(job_dir(sweep_id, job_id, root) / "state.json", state)


def list_sweeps(root: Path | None = None) -> list[str]:
    """Return the sweep ids under the runs root, oldest first."""
    root = root or runs_dir()
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.startswith("."):  # a sweep being written (create_sweep renames it when done)
            continue
        try:
            if os.path.isfile(root / name / "sweep.json"):
                found.append((os.stat(root / name).st_mtime, name))
        except FileNotFoundError:  # renamed or removed meanwhile
            continue
    return [name for _, name in sorted(found)]


def resolve_sweep_id(text: str, root: Path | None = None) -> str:
    """Return the sweep id that text names: an exact id, a unique prefix, or the newest match.

    `launch status cifar` means the newest sweep whose id starts with "cifar".
    """
    ids = list_sweeps(root)
    if text in ids:
        return text
    matches = [s for s in ids if s.startswith(text)]
    if not matches:
        where = root or runs_dir()
        known = ", ".join(reversed(ids[-5:])) or "none"
        raise UserError(f"no sweep matches {text!r} in {where} (newest first: {known})")
    return matches[-1]


JOB_CANDIDATES_SHOWN = 8
_HASH8 = re.compile(r"[0-9a-f]{8}")


def match_jobs(text: str, ids: Sequence[str]) -> list[str]:
    """Return the job ids that text names, by the first rule any id satisfies.

    The rules, most exact first: the whole id; the 8-hex hash that ends every id; a prefix;
    a substring; the form `launch status` shortens long ids to, where `~` stands for the
    cut middle. The hash comes before the substring rule so that it names one job even when
    the same 8 characters occur inside another id; a prefix or substring that ends where a
    key=value piece ends wins over one that does not (`model=resnet9_seed=1` is not seed=10).
    """
    if text in ids:
        return [text]
    whole = re.compile(rf"(?:^|[_-]){re.escape(text)}(?=[_-]|$)")
    rules = [lambda i: i.startswith(text) and whole.match(i) is not None,
             lambda i: i.startswith(text),
             lambda i: whole.search(i) is not None,
             lambda i: text in i]
    if _HASH8.fullmatch(text):
        rules.insert(0, lambda i: i.endswith("-" + text))
    if "~" in text:  # never in an id: ids are made of [A-Za-z0-9._=-]
        cut = re.compile(".*".join(re.escape(part) for part in text.split("~")))
        rules.append(lambda i: cut.fullmatch(i) is not None)
    for rule in rules:
        found = [i for i in ids if rule(i)]
        if found:
            return found
    return []


def pick_job(sweep_id: str, text: str, ids: Sequence[str]) -> str:
    """Return the one job id of sweep_id that text names; UserError listing candidates if not."""
    found = match_jobs(text.strip(), ids)
    if len(found) == 1:
        return found[0]
    if found:
        head = f"{len(found)} jobs of sweep {sweep_id} match {text!r}:"
        hint = f"name one by more of its id, or by its hash: {sweep_id}/{found[0][-8:]}"
    else:
        head = f"no job of sweep {sweep_id} matches {text!r}; it has {len(ids)}:"
        hint = "name a job by its id, a part of it, or its 8-hex hash"
    listed = found or list(ids)
    lines = [head, *(f"  {j}" for j in listed[:JOB_CANDIDATES_SHOWN])]
    if len(listed) > JOB_CANDIDATES_SHOWN:
        lines.append(f"  ... and {len(listed) - JOB_CANDIDATES_SHOWN} more")
    raise UserError("\n".join([*lines, hint]))


def split_target(text: str, root: Path | None = None) -> tuple[str, str | None]:
    """Return (sweep_id, job_id or None) from "SWEEP" or "SWEEP/JOB" (see match_jobs)."""
    sweep_text, _, job_text = text.partition("/")
    sweep_id = resolve_sweep_id(sweep_text, root)
    if not job_text:
        return sweep_id, None
    ids = [j["id"] for j in read_sweep_info(sweep_id, root)["jobs"]]
    return sweep_id, pick_job(sweep_id, job_text, ids)


def cancel_marker(sweep_path: Path, job_id: str | None) -> Path:
    """Return the file whose presence asks to cancel one job, or (job_id None) the sweep."""
    return sweep_path / "jobs" / job_id / "cancel" if job_id else sweep_path / "cancel"


def request_cancel(sweep_path: Path, job_id: str | None, grace_s: float) -> None:
    """Ask for a job (or the whole sweep) to be cancelled, SIGKILL coming grace_s after TERM."""
    atomic_write_json(cancel_marker(sweep_path, job_id), {"at": time.time(), "grace_s": grace_s})


def cancel_requested(sweep_path: Path, job_id: str) -> float | None:
    """Return the grace in seconds if cancelling this job (or its sweep) was asked, else None."""
    for marker in (cancel_marker(sweep_path, None), cancel_marker(sweep_path, job_id)):
        if marker.exists():
            request = read_json(marker) or {}
            return float(request.get("grace_s", 10.0))
    return None


def clear_cancel_requests(sweep_path: Path, job_ids: Sequence[str]) -> None:
    """Remove the cancel requests of a sweep and its jobs, so that they may run again."""
    for job_id in [None, *job_ids]:
        try:
            cancel_marker(sweep_path, job_id).unlink()
        except FileNotFoundError:
            pass


def supervisor_alive(sweep_path: Path) -> bool | None:
    """Return whether the sweep's local supervisor runs; None when it never had one here."""
    info = read_json(sweep_path / "supervisor.json")
    if not info:
        return None
    if info.get("host") != socket.gethostname():
        return None
    from launcher import procs

    return procs.same_process(info.get("pid", 0), info.get("create_time"))
