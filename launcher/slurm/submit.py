"""The Slurm executor: submit a sweep as job arrays through submitit, resume it, cancel it.

Submission returns at once: the jobs run launcher/slurm/task.py on the nodes, which records
each job's state in the shared run directory. Where the jobs stand is asked of Slurm by
launcher/slurm/query.py, which resume and cancel use too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from launcher.config.sweepfile import SlurmConfig
from launcher.errors import UserError
from launcher.rundir import state as js
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import ENDED_STATES, read_state, write_state
from launcher.rundir.store import atomic_write_json
from launcher.rundir.sweepdir import clear_cancel_requests, read_info, request_cancel
from launcher.show.text import plural
from launcher.slurm import sbatch
from launcher.slurm.query import (
    ACTIVE,
    QUERY_TIMEOUT_S,
    max_array_size,
    slurm_ids,
    slurm_record,
    slurm_states,
)

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


def submit_array(executor, paths: SweepPaths, ids: list[str], cfg: SlurmConfig,
                 extra: dict) -> str:
    """Return the Slurm id of a new job array running the jobs ids, one task per job."""
    from launcher.slurm.task import SlurmTask

    parallel = cfg.array_parallelism or len(ids)
    # submitit's own log names (JobPaths), with the array's %A_%a for its %j
    executor.update_parameters(
        additional_parameters={**extra, "array": f"0-{len(ids) - 1}%{parallel}",
                               "output": str(paths.slurm_log("%A_%a_0_log")),
                               "error": str(paths.slurm_log("%A_%a_0_log", "err"))},
        srun_args=["--output", str(paths.slurm_log("%A_%a_%t_log")),
                   "--error", str(paths.slurm_log("%A_%a_%t_log", "err"))])
    try:
        job = executor.submit(SlurmTask(str(paths.root), tuple(ids)))
    except Exception as err:  # submitit wraps sbatch's complaint; show it whole
        raise UserError(f"sbatch refused the sweep: {err}") from None
    link_task_pickles(job.paths.submitted_pickle, job.job_id, len(ids))
    return job.job_id


def submit_jobs(paths: SweepPaths, cfg: SlurmConfig, job_ids: Sequence[str],
                hold: bool = False) -> list[str]:
    """Return the Slurm ids of the arrays that now hold job_ids, recorded in the Slurm record."""
    sbatch.check_path(paths.root)  # it goes into #SBATCH --output= lines
    paths.slurm_dir.mkdir(exist_ok=True)
    params = sbatch.submitit_parameters(cfg, paths.sweep_id, hold=hold)
    extra = params.pop("additional_parameters")
    executor = make_executor(paths.slurm_dir, params)
    arrays = []
    for part in sbatch.split_array(len(job_ids), max_array_size()):
        ids = [job_ids[i] for i in part]
        arrays.append({"slurm_job_id": submit_array(executor, paths, ids, cfg, extra),
                       "jobs": ids})
    record = slurm_record(paths)
    mapping = dict(record.get("jobs") or {})
    for arr in arrays:
        mapping.update({job_id: f"{arr['slurm_job_id']}_{i}"
                        for i, job_id in enumerate(arr["jobs"])})
    atomic_write_json(paths.slurm_json, {
        "format": "launch-slurm/1", "mode": "submitit", "job_name": paths.sweep_id,
        "submitit_folder": str(paths.slurm_dir),
        "submissions": [*(record.get("submissions") or []),
                        {"time": time.time(), "arrays": arrays}],
        "jobs": mapping})
    return [a["slurm_job_id"] for a in arrays]


def submit_sweep(sweep, plans, paths: SweepPaths, hold: bool = False) -> list[str]:
    """Return the Slurm job ids of the arrays that now run the planned sweep (not waiting)."""
    note = sbatch.shared_storage_warning(paths.root)
    if note:
        print(f"launch: warning: {note}", file=sys.stderr)
    return submit_jobs(paths, sweep.slurm, [p.job_id for p in plans], hold=hold)


# ---------------------------------------------------------------- cancel and resume

def run_scancel(argv: Sequence[str]) -> str | None:
    """Return why scancel failed, in one line, or None when it did its work."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=QUERY_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"scancel did not answer in {QUERY_TIMEOUT_S:g} s: is slurmctld up?"
    except OSError as err:
        return f"cannot run scancel ({err.strerror or err}): is Slurm installed here?"
    # An array that ended long ago may be purged already: scancel calls its id
    # invalid, which for cancelling means there is nothing left to do.
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        return f"scancel failed: {lines[0]}"
    return None


def cancel(paths: SweepPaths, job_ids: Sequence[str] | None = None) -> int:
    """Cancel the sweep's Slurm jobs (or only job_ids) with scancel; return 0."""
    info = read_info(paths)
    name = info.sweep_id
    targets = list(job_ids) if job_ids else info.job_ids
    # Marked first: a node that sees its child stop records `cancelled`, not `preempted`.
    for job_id in targets if job_ids else [None]:
        request_cancel(paths, job_id, grace_s=0)  # Slurm's own KillWait is the grace
    ids = slurm_ids(paths, info)
    argv = ["scancel"]
    if job_ids:
        argv += sorted({ids[j] for j in targets if j in ids})
    else:
        argv += sorted({i.split("_")[0] for i in ids.values()})
        argv += [f"--name={name}"] if len(argv) == 1 else []
    problem = run_scancel(argv) if len(argv) > 1 else None
    ended = 0
    for job_id in targets:
        st = read_state(paths.job(job_id))
        if st.state in (js.RUNNING, *ENDED_STATES):
            continue  # its node records the end (and sees the cancel mark)
        write_state(paths.job(job_id), st._replace(state=js.CANCELLED, ended=time.time(),
                                                   reason=js.CANCELLED_BEFORE_START))
        ended += 1
    if problem:
        # Not `launch cancel` again: the jobs are marked cancelled now, it would see nothing.
        marked = f"{plural(ended, 'job')} not started yet marked cancelled here"
        raise UserError(f"{problem} ({marked}: a task Slurm starts for one ends at once; "
                        f"run `{' '.join(argv)}` once it answers, for the running ones and "
                        f"the queue)")
    what = ", ".join(targets) if job_ids else plural(len(targets), "job")
    print(f"cancelled {what} of {name} ({ended} not started; "
          f"{' '.join(argv) if len(argv) > 1 else 'nothing queued'})")
    return 0


def resume_sweep(paths: SweepPaths, hold: bool = False) -> int:
    """Resubmit the jobs that neither finished nor still wait or run in Slurm; return 0."""
    info = read_info(paths)
    states = slurm_states(paths)
    todo = []
    for job_id in info.job_ids:
        st = read_state(paths.job(job_id))
        slurm = states.get(job_id)
        if st.state == js.FINISHED or (slurm and slurm.state in ACTIVE):
            continue
        write_state(paths.job(job_id), st._replace(state=js.PENDING, reason=js.RESUBMITTED))
        todo.append(job_id)
    clear_cancel_requests(paths, todo)
    if not todo:
        print(f"nothing to resume: every job of {paths.sweep_id} finished or is in Slurm's "
              "queue")
        return 0
    arrays = submit_jobs(paths, SlurmConfig.from_json(info.slurm), todo, hold=hold)
    print(f"resubmitted {plural(len(todo), 'job')} of {paths.sweep_id} as Slurm job "
          f"{', '.join(arrays)}")
    return 0
