"""Issue 5, item 2: a requeued job continues from its checkpoint and ends with the same weights.

Two ways in: `scontrol requeue` (Slurm's SIGTERM; the job checkpoints, Slurm requeues it) and
SIGUSR2, the time-limit warning (submitit calls SlurmTask.checkpoint, which forwards SIGTERM,
waits for exit 75 and hands submitit a DelayedSubmission to requeue).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from slurmhelpers import (
    cli,
    local_hashes,
    result_hash,
    start_local_runs,
    states,
    sweep_path,
    tiny_job,
    wait_ended,
    wait_for,
    write_sweep,
)

from launcher import rundir, slurm

pytestmark = pytest.mark.slurm


def scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, timeout=30, capture_output=True)


def slurm_word(slurm_id: str) -> str:
    """Return squeue's state of one task."""
    return subprocess.run(["squeue", "-h", "-j", slurm_id, "-o", "%T"], capture_output=True,
                          text=True, timeout=30).stdout.strip()


def run_now(slurm_id: str) -> None:
    """Make a requeued task eligible at once instead of in Slurm's two minutes (BeginTime)."""
    scontrol("update", f"JobId={slurm_id}", "StartTime=now")


def test_requeue_and_sigusr2_resume_from_checkpoint_same_hash(cluster, capsys, tmp_path):
    file = write_sweep(tmp_path, "rq", "name: rq\n" + tiny_job(epochs=8, train_size=1500) + (
        "seeds: 2\nresources: {gpus_per_job: 1, cpus_per_job: 1}\n"
        "slurm: {time_min: 30, cpus_per_task: 1, gpus_per_node: 1}\n"))
    code, out, err = cli(capsys, "sweep", file, "--executor", "slurm")
    assert code == 0, err
    path = sweep_path(cluster, out)
    by_requeue, by_usr2 = json.loads((path / "sweep.json").read_text())["jobs"]
    dirs = {j["id"]: path / "jobs" / j["id"] for j in (by_requeue, by_usr2)}
    reference = start_local_runs(list(dirs.values()), tmp_path / "local", threads=1, workers=0)

    def mid_training(job_id: str) -> bool:
        metrics = dirs[job_id] / "metrics.jsonl"
        return metrics.exists() and metrics.read_text().count("\n") >= 1

    ids = {}
    for job, how in ((by_requeue, "requeue"), (by_usr2, "usr2")):
        wait_for(lambda j=job["id"]: mid_training(j), 120, f"{job['id']} to finish an epoch")
        ids[job["id"]] = states(path)[job["id"]]["slurm_job_id"]
        if how == "requeue":
            scontrol("requeue", ids[job["id"]])
        else:
            subprocess.run(["scancel", "--signal=USR2", ids[job["id"]]], check=True, timeout=30)

    for job_id, slurm_id in ids.items():
        st = wait_for(lambda j=job_id: states(path)[j].get("state") == "preempted"
                      and states(path)[j], 60, f"{job_id} to checkpoint")
        assert st["exit_code"] == 75, st
        wait_for(lambda s=slurm_id: slurm_word(s) == "PENDING", 60, f"{slurm_id} requeued")
        view = slurm.with_slurm_states(rundir.load_sweep_view(path.name), path)
        job = {j.job_id: j for j in view.jobs}[job_id]
        assert job.state == "pending" and "slurm PENDING" in job.reason, job
        run_now(slurm_id)

    ended = wait_ended(path)
    hashes = local_hashes(reference)
    for job_id, d in dirs.items():
        st = ended[job_id]
        assert st["state"] == "finished" and st["runs"] == 2 and st["attempt"] == 2, st
        log = (d / "stdout.log").read_text()
        assert log.count("[launch]") == 2 and "resuming" in log, log[-3000:]
        assert result_hash(d) == hashes[job_id]
    reasons = {st["reason"] for st in ended.values()}
    assert reasons == {None}
