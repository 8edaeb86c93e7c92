"""A requeued job continues from its checkpoint and ends with the same weights.

Two ways in: `scontrol requeue` (Slurm's SIGTERM; the job checkpoints, Slurm requeues it) and
SIGUSR2, the time-limit warning (submitit calls SlurmTask.checkpoint, which forwards SIGTERM,
waits for exit 75 and hands submitit a DelayedSubmission to requeue).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from rundirs import view_of
from slurmhelpers import (
    cli,
    local_hashes,
    result_hash,
    scontrol,
    slurm_word,
    start_local_runs,
    started_again,
    states,
    sweep_path,
    tiny_job,
    wait_ended,
    wait_for,
    write_sweep,
)

from launcher.rundir.layout import SweepPaths
from launcher.slurm import query as slurm_status

pytestmark = pytest.mark.slurm


def test_requeue_and_sigusr2_resume_from_checkpoint_same_hash(cluster, capsys, tmp_path):
    file = write_sweep(tmp_path, "rq", "name: rq\n" + tiny_job(epochs=8, train_size=1500) + (
        "seeds: 2\nresources: {gpus_per_job: 1, cpus_per_job: 1}\n"
        "slurm: {time_min: 30, cpus_per_task: 1, gpus_per_node: 1}\n"))
    code, out, err = cli(capsys, "sweep", file, "--executor", "slurm")
    assert code == 0, err
    path = sweep_path(cluster, out)
    # the same seed-0 job once more, through the standalone script
    script = tmp_path / "rq.sbatch"
    code, out, err = cli(capsys, "sbatch", file, "name=rq-script", "grid.seed=0", "-o",
                         str(script))
    assert code == 0, err
    (script_path,) = cluster.glob("rq-script-*")
    subprocess.run(["sbatch", str(script)], check=True, timeout=30, capture_output=True)

    by_requeue, by_usr2 = (j["id"] for j in json.loads((path / "sweep.json").read_text())["jobs"])
    plan = [(path, by_requeue, "requeue"), (path, by_usr2, "usr2"),
            (script_path, by_requeue, "usr2-batch")]
    reference = start_local_runs([path / "jobs" / j for j in (by_requeue, by_usr2)],
                                 tmp_path / "local", threads=1, workers=0)

    def mid_training(sweep, job_id: str) -> bool:
        metrics = sweep / "jobs" / job_id / "metrics.jsonl"
        return metrics.exists() and metrics.read_text().count("\n") >= 1

    ids = {}
    for sweep, job_id, how in plan:
        wait_for(lambda s=sweep, j=job_id: mid_training(s, j), 120, f"{how}: an epoch done")
        slurm_id = ids[how] = states(sweep)[job_id]["slurm_job_id"]
        if how == "requeue":  # what preemption with PreemptMode=REQUEUE does too
            scontrol("requeue", slurm_id)
        elif how == "usr2":  # the time-limit warning, to the job step (submitit's handler)
            subprocess.run(["scancel", "--signal=USR2", slurm_id], check=True, timeout=30)
        else:  # the standalone script asks for B:USR2: the batch shell gets it
            subprocess.run(["scancel", "--batch", "--signal=USR2", slurm_id], check=True,
                           timeout=30)

    for sweep, job_id, how in plan:
        st = wait_for(lambda s=sweep, j=job_id: states(s)[j].get("state") == "preempted"
                      and states(s)[j], 60, f"{how}: the checkpoint")
        assert st["exit_code"] == 75, st
        wait_for(lambda s=ids[how]: slurm_word(s).startswith("PENDING"), 60, f"{how}: requeued")
        view = slurm_status.with_slurm_states(view_of(sweep.name), SweepPaths(sweep))
        job = {j.job_id: j for j in view.jobs}[job_id]
        assert job.state == "pending" and "slurm PENDING" in job.reason, (how, job)
    for how, slurm_id in ids.items():
        wait_for(lambda s=slurm_id: started_again(s), 60, f"{how}: started again", poll_s=0.5)

    ended = {**wait_ended(path), "script": wait_ended(script_path)[by_requeue]}
    hashes = local_hashes(reference)
    for sweep, job_id, how in plan:
        st = ended["script" if sweep == script_path else job_id]
        assert st["state"] == "finished" and st["runs"] == 2 and st["attempt"] == 2, (how, st)
        assert st["reason"] is None
        log = (sweep / "jobs" / job_id / "stdout.log").read_text()
        assert log.count("[launch]") == 2 and "resuming" in log, (how, log[-3000:])
        assert result_hash(sweep / "jobs" / job_id) == hashes[job_id], how
