"""Names that outlive the code: a job submitted before the launcher moved still runs and resumes.

Sweeps already in Slurm's queue hold submitit pickles that name `launcher.slurm_task.SlurmTask`,
and `launch sbatch` scripts run `python -m launcher.slurm_task`. The code lives in
launcher/slurm/task.py now; these names must keep working.
"""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import cloudpickle
import pytest
from slurmhelpers import (
    local_hashes,
    result_hash,
    slurm_word,
    start_local_runs,
    started_again,
    states,
    tiny_job,
    wait_ended,
    wait_for,
    write_sweep,
)

from launcher.commands import sweep as sweeping
from launcher.slurm import submit
from launcher.slurm.task import SlurmTask

FIXTURE = Path(__file__).parent.parent / "fixtures" / "slurm" / "submitted-before-the-move.pkl"
OLD_NAME = b"launcher.slurm_task"


def test_a_pickle_written_before_the_move_unpickles_to_todays_task():
    # Written by the launcher as it was before its modules moved into subpackages.
    data = FIXTURE.read_bytes()
    assert OLD_NAME in data and b"launcher.slurm.task" not in data
    submission = pickle.loads(data)
    task = submission.function
    assert type(task) is SlurmTask
    assert (task.sweep_dir, task.job_ids) == ("/runs/old-20261101-000000", ("seed=0-0123abcd",))


def old_style(data: bytes) -> bytes:
    """Return a submitted pickle as the launcher before the move wrote it: the old class name."""
    submission = pickle.loads(data)
    SlurmTask.__module__ = "launcher.slurm_task"  # the shim re-exports the very same class
    try:
        out = cloudpickle.dumps(submission)
    finally:
        SlurmTask.__module__ = "launcher.slurm.task"
    assert OLD_NAME in out and b"launcher.slurm.task" not in out
    return out


@pytest.mark.slurm
def test_a_job_submitted_under_the_old_names_resumes_after_sigusr2(cluster, tmp_path):
    file = write_sweep(tmp_path, "old", "name: old\n" + tiny_job(epochs=8, train_size=1500) + (
        "resources: {gpus_per_job: 0, cpus_per_job: 1}\n"
        "slurm: {time_min: 30, cpus_per_task: 1}\n"))
    sweep, plans = sweeping.load_plan(file, [])
    paths = sweeping.create_run_dir(sweep, plans, "slurm")
    (job_id,) = [p.job_id for p in plans]
    # Held, so that its pickle can be made the old kind before any node reads it.
    (array,) = submit.submit_jobs(paths, sweep.slurm, [job_id], hold=True)
    (task_pickle,) = paths.slurm_dir.glob(f"{array}_0_submitted.pkl")
    old = old_style(task_pickle.read_bytes())
    task_pickle.unlink()  # a hard link to the array's one pickle: replace it, do not write through
    task_pickle.write_bytes(old)
    reference = start_local_runs([paths.job(job_id).dir], tmp_path / "local", threads=1,
                                 workers=0)
    subprocess.run(["scontrol", "release", array], check=True, timeout=30, capture_output=True)

    metrics = paths.job(job_id).metrics_jsonl
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, 120,
             "an epoch done")
    slurm_id = states(paths.root)[job_id]["slurm_job_id"]
    subprocess.run(["scancel", "--signal=USR2", slurm_id], check=True, timeout=30)
    wait_for(lambda: states(paths.root)[job_id].get("state") == "preempted", 60,
             "the checkpoint")
    wait_for(lambda: slurm_word(slurm_id).startswith("PENDING"), 60, "requeued")
    wait_for(lambda: started_again(slurm_id), 60, "started again", poll_s=0.5)
    ended = wait_ended(paths.root)[job_id]
    assert ended["state"] == "finished" and ended["runs"] == 2, ended
    log = paths.job(job_id).stdout_log.read_text()
    assert "resuming" in log, log[-3000:]
    assert result_hash(paths.job(job_id).dir) == local_hashes(reference)[job_id]
