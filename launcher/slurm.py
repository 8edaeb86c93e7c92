"""The Slurm executor: submit a sweep as job arrays through submitit, ask where jobs stand, cancel.

Submission returns at once: the jobs run `launcher.slurm_task` on the nodes, which writes each
job's state.json into the shared run directory. Status asks squeue (live, and finished jobs for
MinJobAge), then sacct (history; absent on clusters without accounting), then the jobs' own
files; every call has a timeout, so a slow or missing controller never hangs `launch status`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher import sbatch
from launcher.errors import UserError
from launcher.rundir import (
    ENDED_STATES,
    SweepView,
    atomic_write_json,
    cancel_requested,
    clear_cancel_requests,
    read_json,
    request_cancel,
)
from launcher.sweepfile import SlurmConfig

QUERY_TIMEOUT_S = 10.0
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize
SLURM_JSON = "slurm.json"
ACTIVE = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED",
          "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED")
ENDED = {"COMPLETED": "finished", "CANCELLED": "cancelled", "TIMEOUT": "timeout",
         "PREEMPTED": "preempted", "FAILED": "failed", "NODE_FAIL": "failed",
         "OUT_OF_MEMORY": "failed", "BOOT_FAIL": "failed", "DEADLINE": "timeout"}


@dataclass(frozen=True)
class SlurmState:
    """What Slurm says of one job of a sweep; state None when Slurm does not know it (any more)."""

    job_id: str
    slurm_job_id: str | None
    state: str | None  # Slurm's word: PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ...
    reason: str | None
    node: str | None
    source: str  # squeue | sacct | files


# ---------------------------------------------------------------- talking to Slurm

def run_query(argv: Sequence[str], timeout_s: float | None = None) -> str | None:
    """Return the stdout of a Slurm command, or None if it is missing, fails or times out."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=timeout_s or QUERY_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def max_array_size() -> int:
    """Return the cluster's MaxArraySize (`scontrol show config`), or Slurm's default."""
    out = run_query(["scontrol", "show", "config"]) or ""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


# ---------------------------------------------------------------- submitting

def make_executor(folder: Path, params: dict):
    """Return a submitit SlurmExecutor with params; UserError where there is no Slurm."""
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as err:  # submitit's "Could not detect srun"
        raise UserError(f"no Slurm here: {err}") from None
    executor.update_parameters(**params)
    return executor


def link_task_pickles(pickle: Path, array_id: str, n_tasks: int) -> None:
    """Give each array task the path submitit's runner looks for: links to one pickle.

    submitit's map_array writes one pickle per task; for 1,000 jobs that is 1,000 files on
    shared storage before anything runs. Our callable finds its job from the array index, so
    the tasks share one pickle. A checkpoint replaces a task's link with its own file.
    """
    from submitit.core.utils import JobPaths

    for i in range(n_tasks):
        target = JobPaths(pickle.parent, job_id=f"{array_id}_{i}").submitted_pickle
        try:
            os.link(pickle, target)
        except OSError:  # a file system without hard links
            shutil.copyfile(pickle, target)


def submit_array(executor, sweep_dir: Path, ids: list[str], cfg: SlurmConfig,
                 extra: dict) -> str:
    """Return the Slurm id of a new job array running the jobs ids, one task per job."""
    from launcher.slurm_task import SlurmTask

    folder = sweep_dir / "slurm"
    parallel = cfg.array_parallelism or len(ids)
    executor.update_parameters(
        additional_parameters={**extra, "array": f"0-{len(ids) - 1}%{parallel}",
                               "output": f"{folder}/%A_%a_0_log.out",
                               "error": f"{folder}/%A_%a_0_log.err"},
        srun_args=["--output", f"{folder}/%A_%a_%t_log.out",
                   "--error", f"{folder}/%A_%a_%t_log.err"])
    try:
        job = executor.submit(SlurmTask(str(sweep_dir), tuple(ids)))
    except Exception as err:  # submitit wraps sbatch's complaint; show it whole
        raise UserError(f"sbatch refused the sweep: {err}") from None
    link_task_pickles(job.paths.submitted_pickle, job.job_id, len(ids))
    return job.job_id


def submit_jobs(sweep_dir: Path, cfg: SlurmConfig, job_ids: Sequence[str],
                hold: bool = False) -> list[str]:
    """Return the Slurm ids of the arrays that now hold job_ids, recorded in slurm.json."""
    sweep_dir = Path(sweep_dir).absolute()
    sbatch.check_path(sweep_dir)  # it goes into #SBATCH --output= lines
    folder = sweep_dir / "slurm"
    folder.mkdir(exist_ok=True)
    params = sbatch.submitit_parameters(cfg, sweep_dir.name, hold=hold)
    extra = params.pop("additional_parameters")
    executor = make_executor(folder, params)
    arrays = []
    for part in sbatch.split_array(len(job_ids), max_array_size()):
        ids = [job_ids[i] for i in part]
        arrays.append({"slurm_job_id": submit_array(executor, sweep_dir, ids, cfg, extra),
                       "jobs": ids})
    record = read_json(sweep_dir / SLURM_JSON) or {}
    mapping = dict(record.get("jobs") or {})
    for arr in arrays:
        mapping.update({job_id: f"{arr['slurm_job_id']}_{i}"
                        for i, job_id in enumerate(arr["jobs"])})
    atomic_write_json(sweep_dir / SLURM_JSON, {
        "format": "launch-slurm/1", "mode": "submitit", "job_name": sweep_dir.name,
        "submitit_folder": str(folder),
        "submissions": [*(record.get("submissions") or []),
                        {"time": time.time(), "arrays": arrays}],
        "jobs": mapping})
    return [a["slurm_job_id"] for a in arrays]


def submit_sweep(sweep, plans, sweep_dir: Path, hold: bool = False) -> list[str]:
    """Return the Slurm job ids of the arrays that now run the planned sweep (not waiting)."""
    note = sbatch.shared_storage_warning(sweep_dir)
    if note:
        print(f"launch: warning: {note}", file=sys.stderr)
    return submit_jobs(sweep_dir, sweep.slurm, [p.job_id for p in plans], hold=hold)


# ---------------------------------------------------------------- asking where jobs stand

def expand_ids(text: str) -> list[str]:
    """Return the task ids in a Slurm id: "12_3" -> [12_3]; "12_[4-6,9%2]" -> [12_4 .. 12_9]."""
    match = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(?:%\d+)?\]", text)
    if not match:
        return [text]
    out = []
    for part in match.group(2).split(","):
        low, _, high = part.partition("-")
        out += [f"{match.group(1)}_{i}" for i in range(int(low), int(high or low) + 1)]
    return out


def parse_table(text: str) -> list[dict]:
    """Return the rows of `squeue`/`sacct` output in our "id|state|reason|node" format."""
    rows = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        state = parts[1].split()[0] if parts[1].split() else ""  # "CANCELLED by 0"
        reason = parts[2] if parts[2] not in ("", "None", "(null)") else None
        node = parts[3] if parts[3] not in ("", "None assigned", "(null)") else None
        for job in expand_ids(parts[0].strip()):
            rows.append({"id": job, "state": state.rstrip("+"), "reason": reason, "node": node})
    return rows


def slurm_ids(sweep_dir: Path, info: dict) -> dict[str, str]:
    """Return job id -> Slurm task id, from slurm.json and the jobs' own state files."""
    record = read_json(sweep_dir / SLURM_JSON) or {}
    mapping = dict(record.get("jobs") or {})
    for job in info.get("jobs", []):
        st = read_json(sweep_dir / "jobs" / job["id"] / "state.json") or {}
        if st.get("slurm_job_id") and job["id"] not in mapping:
            mapping[job["id"]] = st["slurm_job_id"]
    return mapping


def by_name_ids(rows: list[dict], sweep_dir: Path) -> dict[str, str]:
    """Return job id -> Slurm task id for array tasks found by job name (`launch sbatch`)."""
    try:
        order = (sweep_dir / "slurm" / sbatch.JOBS_LIST).read_text().split()
    except FileNotFoundError:
        return {}
    tasks = {}
    for row in rows:
        array, sep, index = row["id"].partition("_")
        if sep and index.isdigit() and int(index) < len(order):
            tasks.setdefault(array, []).append((int(index), row["id"]))
    # Slices of a sweep over MaxArraySize (LAUNCH_ARRAY_OFFSET), or a resubmission: squeue
    # cannot say which array holds which offset, even when only one slice is left in it, so
    # such a task is named only by the state.json it writes when it starts.
    if len(tasks) != 1 or len(order) > max_array_size():
        return {}
    return {order[index]: task for index, task in next(iter(tasks.values()))}


def query(sweep_dir: Path, info: dict, ids: dict[str, str]) -> tuple[dict[str, dict], dict]:
    """Return (Slurm task id -> row, job id -> task id): squeue first, then sacct."""
    name = info.get("sweep_id") or sweep_dir.name
    arrays = sorted({i.split("_")[0] for i in ids.values()})
    fmt = "%i|%T|%r|%N"
    rows: list[dict] = []
    if arrays:
        rows += parse_table(run_query(["squeue", "-h", "-r", "--states=all", "-o", fmt,
                                       "-j", ",".join(arrays)]) or "")
    if len(ids) < len(info.get("jobs", [])):  # the standalone script: find it by its name
        found = parse_table(run_query(["squeue", "-h", "-r", "--states=all", "-o", fmt,
                                       f"--name={name}"]) or "")
        rows += found
        ids = {**by_name_ids(found, sweep_dir), **ids}
    live = {r["id"]: {**r, "source": "squeue"} for r in rows}
    missing = [j for j in ids.values() if j not in live]
    if missing or len(ids) < len(info.get("jobs", [])):
        since = time.strftime("%Y-%m-%dT%H:%M:%S",
                              time.localtime(float(info.get("created") or time.time()) - 86400))
        argv = ["sacct", "-X", "-n", "-P", "-S", since, "-o", "JobID,State,Reason,NodeList"]
        argv += ["-j", ",".join(arrays)] if arrays else [f"--name={name}"]
        old = parse_table(run_query(argv) or "")
        ids = {**by_name_ids(old, sweep_dir), **ids}
        for row in old:
            live.setdefault(row["id"], {**row, "source": "sacct"})
    return live, ids


def slurm_states(sweep_dir: Path) -> dict[str, SlurmState]:
    """Return job id -> what Slurm says of it (squeue, else sacct, else only the job's files)."""
    sweep_dir = Path(sweep_dir)
    info = read_json(sweep_dir / "sweep.json") or {}
    rows, ids = query(sweep_dir, info, slurm_ids(sweep_dir, info))
    out = {}
    for job in info.get("jobs", []):
        task = ids.get(job["id"])
        row = rows.get(task) if task else None
        if row is None:
            out[job["id"]] = SlurmState(job["id"], task, None, None, None, "files")
        else:
            out[job["id"]] = SlurmState(job["id"], task, row["state"], row["reason"],
                                        row["node"], row["source"])
    return out


def merged_state(slurm: SlurmState, file_state: str,
                 cancel_marked: bool = False) -> tuple[str, str | None]:
    """Return (launch state, reason) from Slurm's word and the job's own state.json."""
    word = slurm.state
    if word is None:
        if file_state in ENDED_STATES:
            return file_state, None
        if cancel_marked:  # its node never wrote the end (killed), and Slurm has forgotten it
            return "cancelled", "cancelled by launch cancel"
        return file_state, "not known to Slurm (squeue; sacct where there is accounting)"
    text = f"slurm {word}" + (f" ({slurm.reason})" if slurm.reason else "")
    if slurm.node and word in ("RUNNING", "COMPLETING"):
        text += f" on {slurm.node}"
    if file_state == "finished":  # the job's result is on disk whatever came after
        return "finished", text
    if word in ("COMPLETING", "SIGNALING", "STAGE_OUT") and file_state != "running":
        return ("preempted" if file_state == "pending" else file_state), text
    if word in ("RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"):
        # RUNNING after a `preempted` file: the requeued task started again
        return ("running" if file_state not in ENDED_STATES else file_state), text
    if word in ACTIVE:
        return "pending", text
    if word == "COMPLETED":
        return (file_state if file_state in ENDED_STATES else "finished"), text
    return ENDED.get(word, file_state), text


def with_slurm_states(view: SweepView, sweep_dir: Path) -> SweepView:
    """Return the sweep's view with each job's state and reason as Slurm and its files say.

    A sweep whose jobs have all ended (by their files) costs no Slurm query.
    """
    if all(job.state in ENDED_STATES for job in view.jobs):
        return view
    states = slurm_states(sweep_dir)
    jobs = []
    for job in view.jobs:
        slurm = states.get(job.job_id)
        if slurm is None:
            jobs.append(job)
            continue
        marked = cancel_requested(sweep_dir, job.job_id) is not None
        state, reason = merged_state(slurm, job.state, marked)
        jobs.append(job._replace(state=state, reason=reason or job.reason,
                                 slurm_job_id=slurm.slurm_job_id or job.slurm_job_id))
    return view._replace(jobs=tuple(jobs))


# ---------------------------------------------------------------- cancel and resume

def cancel(sweep_dir: Path, job_ids: Sequence[str] | None = None) -> int:
    """Cancel the sweep's Slurm jobs (or only job_ids) with scancel; return 0."""
    sweep_dir = Path(sweep_dir)
    info = read_json(sweep_dir / "sweep.json") or {}
    every = [j["id"] for j in info.get("jobs", [])]
    targets = list(job_ids) if job_ids else every
    # Marked first: a node that sees its child stop records `cancelled`, not `preempted`.
    for job_id in targets if job_ids else [None]:
        request_cancel(sweep_dir, job_id, grace_s=0)  # Slurm's own KillWait is the grace
    ids = slurm_ids(sweep_dir, info)
    argv = ["scancel"]
    if job_ids:
        argv += sorted({ids[j] for j in targets if j in ids})
    else:
        argv += sorted({i.split("_")[0] for i in ids.values()})
        argv += [f"--name={info.get('sweep_id') or sweep_dir.name}"] if len(argv) == 1 else []
    if len(argv) > 1:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as err:
            raise UserError(f"scancel failed: {err}") from None
        # An array that ended long ago may be purged already: scancel calls its id
        # invalid, which for cancelling means there is nothing left to do.
        if done.returncode != 0 and "Invalid job id" not in done.stderr:
            raise UserError(f"scancel failed: {done.stderr.strip() or done.returncode}")
    ended = 0
    for job_id in targets:
        path = sweep_dir / "jobs" / job_id / "state.json"
        st = read_json(path) or {"state": "pending"}
        if st.get("state") in ("running", *ENDED_STATES):
            continue  # its node records the end (and sees the cancel mark)
        atomic_write_json(path, {**st, "state": "cancelled", "ended": time.time(),
                                 "reason": "cancelled by launch cancel"})
        ended += 1
    what = f"{len(targets)} jobs ({ended} not started)" if not job_ids else ", ".join(targets)
    print(f"cancelled {what} of {sweep_dir.name} ({' '.join(argv[1:]) or 'nothing queued'})")
    return 0


def resume_sweep(sweep_dir: Path, hold: bool = False) -> int:
    """Resubmit the jobs that neither finished nor still wait or run in Slurm; return 0."""
    sweep_dir = Path(sweep_dir).absolute()
    info = read_json(sweep_dir / "sweep.json") or {}
    states = slurm_states(sweep_dir)
    todo = []
    for job in info.get("jobs", []):
        path = sweep_dir / "jobs" / job["id"] / "state.json"
        st = read_json(path) or {"state": "pending"}
        slurm = states.get(job["id"])
        if st.get("state") == "finished" or (slurm and slurm.state in ACTIVE):
            continue
        atomic_write_json(path, {**st, "state": "pending", "reason": "resubmitted"})
        todo.append(job["id"])
    clear_cancel_requests(sweep_dir, todo)
    if not todo:
        print(f"nothing to resume: every job of {sweep_dir.name} finished or is in Slurm's queue")
        return 0
    arrays = submit_jobs(sweep_dir, sbatch.slurm_config(info), todo, hold=hold)
    print(f"resubmitted {len(todo)} jobs of {sweep_dir.name} as Slurm job {', '.join(arrays)}")
    return 0
