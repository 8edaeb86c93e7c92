"""What a sweep asks Slurm for, and the standalone array script of `launch sbatch`.

Both ways to Slurm (submitit and the standalone script) take their `#SBATCH` options from
here, so they ask for the same thing. The script never contains a value of the sweep: array
task i reads line i+1 of the array's job list in the run directory and runs that job's folder,
where its spec is read as data. Hostile sweep names and swept strings therefore never
reach a shell; the only things written into the script are the run directory's path, the
Python interpreter's path and the user's own `sbatch_lines`/`setup` (checked one line each).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from launcher.errors import UserError
from launcher.rundir.layout import SweepPaths
from launcher.rundir.store import atomic_write_json, atomic_write_text

SIGNAL_DELAY_S = 90  # SIGUSR2 this long before the time limit: time to write a checkpoint
# `#SBATCH` lines are not parsed by a shell: a path with spaces or quotes would break them.
SAFE_PATH = re.compile(r"[A-Za-z0-9._/+=@,-]+")
SHARED_HINT = ("nodes must all see the run directory: on a real cluster set LAUNCH_RUNS_DIR "
               "to shared storage (home, project or scratch)")


def split_array(n_jobs: int, max_size: int) -> list[range]:
    """Return the index ranges of the arrays a sweep of n_jobs needs (each <= max_size tasks)."""
    size = max(1, max_size)
    return [range(start, min(start + size, n_jobs)) for start in range(0, n_jobs, size)]


def shared_storage_warning(path: Path) -> str | None:
    """Return a warning when the run directory is on node-local storage (/tmp), else None."""
    real = os.path.realpath(path)
    for local in ("/tmp", "/var/tmp", "/dev/shm"):
        if real == local or real.startswith(local + "/"):
            return f"run directory {real} is under {local}: {SHARED_HINT}"
    return None


def sbatch_options(cfg, sweep_id: str) -> dict[str, str | bool]:
    """Return the sbatch options (long names, no dashes) for one task of the sweep."""
    opts: dict[str, str | bool] = {"job-name": sweep_id, "time": str(cfg.time_min),
                                   "cpus-per-task": str(cfg.cpus_per_task)}
    if cfg.gpus_per_node:
        opts["gres"] = f"gpu:{cfg.gpus_per_node}"
    if cfg.mem_gb is not None:
        opts["mem"] = f"{int(cfg.mem_gb)}G" if cfg.mem_gb == int(cfg.mem_gb) \
            else f"{int(cfg.mem_gb * 1024)}M"
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(cfg, key)
        if value is not None:
            opts[key] = str(value)
    opts["requeue"] = True  # preemption and `scontrol requeue` put the task back in the queue
    return opts


def parse_sbatch_line(line: str) -> tuple[str, str | bool]:
    """Return (option, value or True) of an `#SBATCH --option[=value]` line; UserError if not."""
    text = line.removeprefix("#SBATCH").strip()
    match = re.fullmatch(r"--([A-Za-z][A-Za-z0-9-]*)(?:[= ](.+))?", text)
    if not match or "\n" in line or "\r" in line:
        raise UserError(f"slurm.sbatch_lines: cannot use {line!r}: write one long option per "
                        "line, e.g. '#SBATCH --exclusive' or '#SBATCH --reservation=gpu-day'")
    value = match.group(2)
    return match.group(1), (value.strip() if value else True)


def submitit_parameters(cfg, sweep_id: str, hold: bool = False) -> dict:
    """Return the keyword arguments of submitit's SlurmExecutor.update_parameters."""
    opts = sbatch_options(cfg, sweep_id)
    named = {"job-name": "job_name", "time": "time", "cpus-per-task": "cpus_per_task",
             "gres": "gres", "partition": "partition", "account": "account", "qos": "qos",
             "constraint": "constraint"}
    params: dict = {named[k]: (int(v) if k in ("time", "cpus-per-task") else v)
                    for k, v in opts.items() if k in named}
    extra = {k: v for k, v in opts.items() if k not in named}
    for line in cfg.sbatch_lines:
        key, value = parse_sbatch_line(line)
        extra[key] = value
    if hold:
        extra["hold"] = True
    params["additional_parameters"] = extra
    params["signal_delay_s"] = SIGNAL_DELAY_S
    if cfg.setup:
        params["setup"] = list(cfg.setup)
    return params


def check_path(path: Path) -> str:
    """Return path as text if `#SBATCH` lines can hold it; UserError otherwise."""
    text = str(path)
    if not SAFE_PATH.fullmatch(text):
        raise UserError(f"run directory {text!r} has characters an #SBATCH line cannot hold; "
                        "set LAUNCH_RUNS_DIR to a path of letters, digits and ._/-")
    return text


def render_sbatch(sweep_id: str, sweep_dir: Path, n_jobs: int, cfg,
                  python: str = sys.executable) -> str:
    """Return the text of the standalone array script for a sweep of n_jobs jobs."""
    paths = SweepPaths(sweep_dir)
    where = check_path(sweep_dir)
    jobs_txt = paths.slurm_jobs_txt.relative_to(paths.root)  # as the script sees them
    job = paths.job("$JOB_ID")
    job_dir, spec = (p.relative_to(paths.root) for p in (job.dir, job.spec_json))
    parallel = f"%{cfg.array_parallelism}" if cfg.array_parallelism else ""
    lines = [
        "#!/bin/bash",
        f"# Slurm array script for sweep {sweep_id} ({n_jobs} jobs), written by 'launch sbatch'.",
        "# Submit it as it is: 'sbatch THIS_FILE'. Task i runs the job on line i+1 of",
        f"# {jobs_txt} in the run directory; each job reads its own {spec.name}, so no value",
        "# of the sweep appears here. Results land in the run directory exactly as with",
        "# 'launch sweep --executor slurm': 'launch status' and 'launch results' read them.",
        "# Over MaxArraySize jobs: submit it once per slice, e.g.",
        "#   sbatch --array=0-999 --export=ALL,LAUNCH_ARRAY_OFFSET=1000 THIS_FILE",
    ]
    opts = {**sbatch_options(cfg, sweep_id), "array": f"0-{n_jobs - 1}{parallel}",
            "output": str(paths.slurm_log("%A_%a")), "open-mode": "append",
            "signal": f"B:USR2@{SIGNAL_DELAY_S}"}
    for key in sorted(opts):
        value = opts[key]
        lines.append(f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={value}")
    for line in cfg.sbatch_lines:
        parse_sbatch_line(line)
        lines.append(line)
    lines += ["", "set -euo pipefail"]
    if cfg.setup:  # after `set -e`: a failing `module load` stops the task, not the job later
        lines += ["# setup (from the sweep file's slurm.setup)", *cfg.setup]
    lines += [
        f"SWEEP_DIR={shlex.quote(where)}",
        'INDEX=$((SLURM_ARRAY_TASK_ID + ${LAUNCH_ARRAY_OFFSET:-0}))',
        f'JOB_ID=$(sed -n "$((INDEX + 1))p" "$SWEEP_DIR/{jobs_txt}")',
        'if [ -z "$JOB_ID" ]; then',
        f'  echo "no job at index $INDEX in $SWEEP_DIR/{jobs_txt}" >&2',
        "  exit 2",
        "fi",
        f"# Runs 'python -m jobs $SWEEP_DIR/{spec} --out $SWEEP_DIR/{job_dir}'",
        "# with threads and DataLoader workers from --cpus-per-task, writes the job's state,",
        "# and on SIGUSR2 (time limit) forwards it, waits for the checkpoint and requeues.",
        f'exec {shlex.quote(python)} -m launcher.slurm_task "$SWEEP_DIR/{job_dir}"',
        "",
    ]
    return "\n".join(lines)


def write_jobs_list(paths: SweepPaths, job_ids: Sequence[str]) -> Path:
    """Write the array's job list (array index -> job id) into the run directory; return it."""
    paths.slurm_dir.mkdir(exist_ok=True)
    atomic_write_text(paths.slurm_jobs_txt, "".join(f"{j}\n" for j in job_ids))
    return paths.slurm_jobs_txt


def write_sbatch(sweep, plans, sweep_dir: Path, script: Path | None = None) -> str:
    """Return the standalone script for a planned sweep, after writing its files into sweep_dir.

    Writes the array's job list, a copy of the script and the sweep's Slurm record, which
    tells `launch status` to find the array by its job name (the sweep id) and, until Slurm
    knows it, that the script (at `script`, where the user asked for it) waits for `sbatch`.
    """
    paths = SweepPaths(Path(sweep_dir).absolute())
    job_ids = [p.job_id for p in plans]
    text = render_sbatch(paths.sweep_id, paths.root, len(job_ids), sweep.slurm)
    write_jobs_list(paths, job_ids)
    atomic_write_text(paths.slurm_script, text)
    from launcher.slurm.query import STATUS_TIMEOUT_S, max_array_size

    # Kept so that status can map tasks found by name to jobs without asking Slurm again.
    most = max_array_size(STATUS_TIMEOUT_S, default=None)
    atomic_write_json(paths.slurm_json, {
        "format": "launch-slurm/1", "mode": "sbatch", "job_name": paths.sweep_id,
        "jobs_list": str(paths.slurm_jobs_txt), "submissions": [], "jobs": {},
        "script": str(script or paths.slurm_script), "max_array_size": most})
    note = shared_storage_warning(paths.root)
    if note:
        print(f"launch: warning: {note}", file=sys.stderr)
    return text
