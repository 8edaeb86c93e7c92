"""Asking Slurm where a sweep's jobs stand: squeue, then sacct, then the jobs' own files.

squeue knows live jobs (and finished ones for MinJobAge), sacct the history (absent on
clusters without accounting), the files what the nodes wrote; `merged_state` turns those
into launch's states. Every call has a timeout, so a slow or missing controller never
hangs `launch status`. launcher/slurm/submit.py submits, resumes and cancels.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from launcher.rundir import state as js
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import ENDED_STATES, read_state
from launcher.rundir.store import read_json
from launcher.rundir.sweepdir import SweepInfo, cancel_requested, parse_info
from launcher.show.views import SweepView

QUERY_TIMEOUT_S = 10.0
# `launch status` asks Slurm once, for every sweep it shows, while NVML answers: a login
# node whose controller hangs must not hold up the GPU view for long.
STATUS_TIMEOUT_S = 2.0
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize
ACTIVE = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED",
          "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED")
ENDED = {"COMPLETED": js.FINISHED, "CANCELLED": js.CANCELLED, "TIMEOUT": js.TIMEOUT,
         "PREEMPTED": js.PREEMPTED, "FAILED": js.FAILED, "NODE_FAIL": js.FAILED,
         "OUT_OF_MEMORY": js.FAILED, "BOOT_FAIL": js.FAILED, "DEADLINE": js.TIMEOUT}


class SlurmState(NamedTuple):
    """What Slurm says of one job of a sweep; state None when Slurm does not know it (any more)."""

    job_id: str
    slurm_job_id: str | None
    state: str | None  # Slurm's word: PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ...
    reason: str | None
    node: str | None
    source: str  # squeue | sacct | files


def run_query(argv: Sequence[str], timeout_s: float | None = None) -> str | None:
    """Return the stdout of a Slurm command, or None if it is missing, fails or times out."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=timeout_s or QUERY_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def max_array_size(timeout_s: float | None = None, default: int | None = DEFAULT_MAX_ARRAY_SIZE
                   ) -> int | None:
    """Return the cluster's MaxArraySize (`scontrol show config`), or default without one."""
    out = run_query(["scontrol", "show", "config"], timeout_s) or ""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else default


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
    """Return the rows of `squeue`/`sacct` output in our "id|state|reason|node[|name]" format."""
    rows = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        state = parts[1].split()[0] if parts[1].split() else ""  # "CANCELLED by 0"
        reason = parts[2] if parts[2] not in ("", "None", "(null)") else None
        node = parts[3] if parts[3] not in ("", "None assigned", "(null)") else None
        named = {"name": parts[4]} if len(parts) > 4 else {}
        for job in expand_ids(parts[0].strip()):
            rows.append({"id": job, "state": state.rstrip("+"), "reason": reason, "node": node,
                         **named})
    return rows


def slurm_record(paths: SweepPaths) -> dict:
    """Return the sweep's Slurm record ({} before anything went to Slurm)."""
    record = read_json(paths.slurm_json)
    return record if isinstance(record, dict) else {}


def slurm_ids(paths: SweepPaths, info: SweepInfo) -> dict[str, str]:
    """Return job id -> Slurm task id, from the Slurm record and the jobs' own states."""
    jobs = slurm_record(paths).get("jobs")
    mapping = {k: v for k, v in jobs.items() if isinstance(v, str)} if isinstance(jobs, dict) \
        else {}
    for job_id in info.job_ids:
        task = read_state(paths.job(job_id)).slurm_job_id
        if task and job_id not in mapping:
            mapping[job_id] = task
    return mapping


def by_name_ids(rows: list[dict], paths: SweepPaths,
                max_size: int | None = None) -> dict[str, str]:
    """Return job id -> Slurm task id for array tasks found by job name (`launch sbatch`).

    max_size is the cluster's MaxArraySize (None: ask Slurm for it).
    """
    try:
        order = paths.slurm_jobs_txt.read_text().split()
    except OSError:
        return {}
    tasks = {}
    for row in rows:
        array, sep, index = row["id"].partition("_")
        if sep and index.isdigit() and int(index) < len(order):
            tasks.setdefault(array, []).append((int(index), row["id"]))
    # Slices of a sweep over MaxArraySize (LAUNCH_ARRAY_OFFSET), or a resubmission: squeue
    # cannot say which array holds which offset, even when only one slice is left in it, so
    # such a task is named only by the state it records when it starts.
    if len(tasks) != 1 or len(order) > (max_size or max_array_size()):
        return {}
    return {order[index]: task for index, task in next(iter(tasks.values()))}


def query(paths: SweepPaths, info: SweepInfo,
          ids: dict[str, str]) -> tuple[dict[str, dict], dict, int | None]:
    """Return (Slurm task id -> row, job id -> task id, rows found by the sweep's name).

    squeue first, then sacct. The last is None where nothing was asked by name (every job's
    task is known) or where a query by name got no answer.
    """
    name = info.sweep_id
    arrays = sorted({i.split("_")[0] for i in ids.values()})
    fmt = "%i|%T|%r|%N"
    rows: list[dict] = []
    named: int | None = None
    if arrays:
        rows += parse_table(run_query(["squeue", "-h", "-r", "--states=all", "-o", fmt,
                                       "-j", ",".join(arrays)]) or "")
    if len(ids) < len(info.jobs):  # the standalone script: find it by its name
        answer = run_query(["squeue", "-h", "-r", "--states=all", "-o", fmt, f"--name={name}"])
        found = parse_table(answer or "")
        named = None if answer is None else len(found)
        rows += found
        ids = {**by_name_ids(found, paths), **ids}
    live = {r["id"]: {**r, "source": "squeue"} for r in rows}
    missing = [j for j in ids.values() if j not in live]
    if missing or len(ids) < len(info.jobs):
        since = time.strftime("%Y-%m-%dT%H:%M:%S",
                              time.localtime((info.created or time.time()) - 86400))
        argv = ["sacct", "-X", "-n", "-P", "-S", since, "-o", "JobID,State,Reason,NodeList"]
        argv += ["-j", ",".join(arrays)] if arrays else [f"--name={name}"]
        answer = run_query(argv)
        old = parse_table(answer or "")
        if not arrays and named is not None and answer is not None:
            named += len(old)
        ids = {**by_name_ids(old, paths), **ids}
        for row in old:
            live.setdefault(row["id"], {**row, "source": "sacct"})
    return live, ids, named


def slurm_states(paths: SweepPaths) -> dict[str, SlurmState]:
    """Return job id -> what Slurm says of it (squeue, else sacct, else only the job's files)."""
    return ask_slurm(paths)[0]


def ask_slurm(paths: SweepPaths) -> tuple[dict[str, SlurmState], int | None]:
    """Return slurm_states and how many tasks Slurm named by the sweep's name (query())."""
    info = parse_info(read_json(paths.sweep_json) or {"jobs": []}, paths)
    rows, ids, named = query(paths, info, slurm_ids(paths, info))
    out = {}
    for job_id in info.job_ids:
        task = ids.get(job_id)
        row = rows.get(task) if task else None
        if row is None:
            out[job_id] = SlurmState(job_id, task, None, None, None, "files")
        else:
            out[job_id] = SlurmState(job_id, task, row["state"], row["reason"], row["node"],
                                     row["source"])
    return out, named


NOT_KNOWN = "not known to Slurm (squeue; sacct where there is accounting)"
NOT_SUBMITTED = "script written, not submitted"


def merged_state(slurm: SlurmState, file_state: str, cancel_marked: bool = False,
                 unknown: str = NOT_KNOWN) -> tuple[str, str | None]:
    """Return (launch state, reason) from Slurm's word and the job's own state.

    unknown is the reason given to a job Slurm does not know that has not ended.
    """
    word = slurm.state
    if word is None:
        if file_state in ENDED_STATES:
            return file_state, None
        if cancel_marked:  # its node never wrote the end (killed), and Slurm has forgotten it
            return js.CANCELLED, "launch cancel (its task ended without a word)"
        return file_state, unknown
    text = f"slurm {word}" + (f" ({slurm.reason})" if slurm.reason else "")
    if slurm.node and word in ("RUNNING", "COMPLETING"):
        text += f" on {slurm.node}"
    if file_state == js.FINISHED:  # the job's result is on disk whatever came after
        return js.FINISHED, text
    if word in ("COMPLETING", "SIGNALING", "STAGE_OUT") and file_state != js.RUNNING:
        return (js.PREEMPTED if file_state == js.PENDING else file_state), text
    if word in ("RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"):
        # RUNNING after a `preempted` file: the requeued task started again
        return (js.RUNNING if file_state not in ENDED_STATES else file_state), text
    if word in ACTIVE:
        return js.PENDING, text
    if word == "COMPLETED":
        return (file_state if file_state in ENDED_STATES else js.FINISHED), text
    return ENDED.get(word, file_state), text


def unknown_reason(record: dict, states: dict[str, SlurmState], file_states: Sequence[str],
                   cwd: str, named: int | None = None) -> str:
    """Return why Slurm does not know a job: a `launch sbatch` script never submitted, or not.

    A standalone script counts as not submitted only when Slurm answered a query by the
    sweep's name with nothing (`named` == 0), no task of it is known and no node has written
    a job's state: saying so wrongly would have the user submit it twice.
    """
    script = record.get("script")
    if not script and record.get("jobs_list"):  # a record from before it named the script
        script = str(SweepPaths(Path(record["jobs_list"]).parent.parent).slurm_script)
    submitted = (named != 0 or record.get("submissions") or record.get("jobs")
                 or any(s.state is not None or s.slurm_job_id for s in states.values())
                 or any(state != js.PENDING for state in file_states))
    if record.get("mode") != "sbatch" or not script or submitted:
        return NOT_KNOWN
    shown = os.path.relpath(script, cwd)
    return f"{NOT_SUBMITTED} (sbatch {script if shown.startswith('..') else shown})"


def with_slurm_states(view: SweepView, paths: SweepPaths) -> SweepView:
    """Return the sweep's view with each job's state and reason as Slurm and its files say.

    A sweep whose jobs have all ended (by their files) costs no Slurm query.
    """
    if all(job.state in ENDED_STATES for job in view.jobs):
        return view
    states, named = ask_slurm(paths)
    return _merged(view, paths, states, named)


def _merged(view: SweepView, paths: SweepPaths, states: dict[str, SlurmState],
            named: int | None) -> SweepView:
    record = slurm_record(paths)
    unknown = unknown_reason(record, states, [job.state for job in view.jobs], os.getcwd(),
                             named)
    jobs = []
    for job in view.jobs:
        slurm = states.get(job.job_id)
        if slurm is None:
            jobs.append(job)
            continue
        marked = cancel_requested(paths.job(job.job_id)) is not None
        state, reason = merged_state(slurm, job.state, marked, unknown)
        jobs.append(job._replace(state=state, reason=reason or job.reason,
                                 slurm_job_id=slurm.slurm_job_id or job.slurm_job_id))
    view = view._replace(jobs=tuple(jobs))
    if unknown.startswith(NOT_SUBMITTED):
        # Not a sweep waiting in a queue: a script waiting for its user (`launch ls` and
        # `launch forget --delete` deal with one never submitted).
        view = view._replace(supervisor="unsubmitted", error=unknown)
    return view


# -- the one question `launch status` asks ------------------------------------------------

NOT_ANSWERING = f"Slurm not answering (squeue gave no answer in {STATUS_TIMEOUT_S:g} s)"


def needs_asking(view: SweepView) -> bool:
    """Return whether status must ask Slurm about a sweep: a Slurm one with jobs not ended."""
    return view.executor == "slurm" and any(j.state not in ENDED_STATES for j in view.jobs)


def ask_by_name(names: Sequence[str], timeout_s: float = STATUS_TIMEOUT_S) -> list[dict] | None:
    """Return squeue's rows (with "name") of every task of the arrays named so, or None when
    Slurm did not answer. Every array of a sweep is named by the sweep's id (sbatch.py)."""
    answer = run_query(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r|%N|%j",
                        f"--name={','.join(names)}"], timeout_s)
    return None if answer is None else parse_table(answer)


def with_answer(view: SweepView, paths: SweepPaths, rows: list[dict] | None) -> SweepView:
    """Return the sweep's view with Slurm's word from one squeue answer for all sweeps
    (ask_by_name); rows None: Slurm did not answer, and the jobs say so."""
    if not needs_asking(view):
        return view
    if rows is None:
        return view._replace(jobs=tuple(
            j if j.state in ENDED_STATES else j._replace(reason=NOT_ANSWERING)
            for j in view.jobs))
    info = parse_info(read_json(paths.sweep_json) or {"jobs": []}, paths)
    found = [row for row in rows if row.get("name") == view.sweep_id]
    ids = slurm_ids(paths, info)
    if len(ids) < len(info.jobs) and found:
        recorded = slurm_record(paths).get("max_array_size")
        ids = {**by_name_ids(found, paths, recorded if isinstance(recorded, int) else 1), **ids}
    live = {row["id"]: row for row in found}
    states = {}
    for job_id in info.job_ids:
        task = ids.get(job_id)
        row = live.get(task) if task else None
        states[job_id] = SlurmState(job_id, task, None, None, None, "files") if row is None \
            else SlurmState(job_id, task, row["state"], row["reason"], row["node"], "squeue")
    return _merged(view, paths, states, len(found))
