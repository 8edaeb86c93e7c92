"""The standalone script of `launch sbatch`, submitted with plain `sbatch`,
fills the run directory exactly as `launch sweep --executor slurm` does, with the same results."""

from __future__ import annotations

import json
import subprocess

import pytest
from slurmhelpers import (
    cli,
    result_hash,
    results_states,
    states,
    sweep_path,
    tiny_job,
    wait_ended,
    write_sweep,
)

pytestmark = pytest.mark.slurm

SWEEP = "name: same\n" + tiny_job() + (
    "seeds: 2\nresources: {gpus_per_job: 1, cpus_per_job: 1}\n"
    "slurm: {time_min: 10, cpus_per_task: 1, gpus_per_node: 1}\n")
# Two epochs: the last checkpoint, and the one before it (kept for a torn last one).
JOB_FILES = {"spec.json", "state.json", "stdout.log", "metrics.jsonl", "result.json",
             "checkpoint.pt", "checkpoint.prev.pt"}


def test_standalone_script_gives_the_same_run_directory(cluster, capsys, tmp_path):
    file = write_sweep(tmp_path, "same", SWEEP)
    script = tmp_path / "sweep.sbatch"
    code, out, err = cli(capsys, "sbatch", file, "name=by-script", "-o", str(script))
    assert code == 0, err
    (by_script,) = [p for p in cluster.iterdir() if p.name.startswith("by-script")]
    assert "#SBATCH --array=0-1" in script.read_text()
    done = subprocess.run(["sbatch", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    code, out, err = cli(capsys, "sweep", file, "name=by-submitit", "--executor", "slurm")
    assert code == 0, err
    by_submitit = sweep_path(cluster, out)

    a, b = wait_ended(by_script), wait_ended(by_submitit)
    assert set(a) == set(b) and len(a) == 2  # the same jobs, by the same ids
    for job_id in a:
        assert a[job_id]["state"] == b[job_id]["state"] == "finished"
        assert set(a[job_id]) == set(b[job_id])  # the same state.json fields
        assert a[job_id]["slurm_job_id"] and a[job_id]["slurm_job_id"] != b[job_id]["slurm_job_id"]
        da, db = by_script / "jobs" / job_id, by_submitit / "jobs" / job_id
        assert {p.name for p in da.iterdir()} == {p.name for p in db.iterdir()} == JOB_FILES
        assert (da / "spec.json").read_text() == (db / "spec.json").read_text()
        assert result_hash(da) == result_hash(db)
    info_a, info_b = (json.loads((p / "sweep.json").read_text()) for p in (by_script, by_submitit))
    assert info_a["jobs"] == info_b["jobs"] and info_a["executor"] == info_b["executor"] == "slurm"

    assert set(results_states(capsys, by_script.name).values()) == {"finished"}
    assert states(by_script) == a
