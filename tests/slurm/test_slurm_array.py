"""A 6-job sweep with one GPU per job runs as one array on a real Slurm."""

from __future__ import annotations

import json
import time

import pytest
from rundirs import state_of, view_of
from slurmhelpers import (
    cli,
    result_hash,
    results_states,
    states,
    sweep_path,
    tiny_job,
    wait_ended,
    wait_for,
    write_sweep,
)

from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import ENDED_STATES
from launcher.slurm import query as slurm_status

pytestmark = pytest.mark.slurm


def test_six_jobs_one_array_own_gpus_same_hashes_as_local(cluster, capsys, tmp_path):
    file = write_sweep(tmp_path, "six", "name: six\n" + tiny_job() + (
        "seeds: 6\nresources: {gpus_per_job: 1, cpus_per_job: 1}\n"
        "slurm: {time_min: 10, cpus_per_task: 1, gpus_per_node: 1}\n"))
    started = time.monotonic()
    code, out, err = cli(capsys, "sweep", file, "--executor", "slurm")
    assert code == 0, err
    assert time.monotonic() - started < 30  # returns once submitted: no waiting for the jobs
    path = sweep_path(cluster, out)
    record = json.loads((path / "slurm.json").read_text())
    (array,) = record["submissions"][0]["arrays"]  # one array for all six
    assert len(array["jobs"]) == 6
    assert f"Slurm job {array['slurm_job_id']}" in err and "under /tmp" in err

    job_dirs = [path / "jobs" / j for j in array["jobs"]]
    # The same file through the local executor (no GPU here: it runs them on the CPU with
    # the same 1 CPU a job, so the same threads), while Slurm runs its array.
    code, out, err = cli(capsys, "sweep", file, "--executor", "local", "--detach")
    assert code == 0, err
    local = out.strip()
    ended = wait_ended(path)
    assert {s["state"] for s in ended.values()} == {"finished"}, ended

    for i, job_id in enumerate(array["jobs"]):
        st = ended[job_id]
        assert st["slurm_job_id"] == f"{array['slurm_job_id']}_{i}"
        # CUDA_VISIBLE_DEVICES as Slurm set it: one of the four GRES devices, the job's own
        assert len(st["gpus"]) == 1 and st["gpus"] == [st["slurm_job_gpus"]]
        assert st["gpu_indices"][0] in range(4)
        assert (st["cpus"], st["num_threads"], st["num_workers"]) == (1, 1, 0)
        result = json.loads((path / "jobs" / job_id / "result.json").read_text())
        assert result["env"]["CUDA_VISIBLE_DEVICES"] == st["gpus"][0]
    # jobs that ran at the same time never shared a GPU
    for a in ended.values():
        for b in ended.values():
            if a is not b and a["started"] < b["ended"] and b["started"] < a["ended"]:
                assert a["gpus"] != b["gpus"], (a, b)

    local_dir = SweepPaths.of(local).root
    wait_for(lambda: all(state_of(local, j).state in ENDED_STATES
                         for j in array["jobs"]), 120, "the local executor's run")
    hashes = {j: result_hash(local_dir / "jobs" / j) for j in array["jobs"]}
    assert len(set(hashes.values())) == 6  # six seeds, six models
    for d in job_dirs:
        assert result_hash(d) == hashes[d.name], d.name

    assert results_states(capsys, path.name) == dict.fromkeys(array["jobs"], "finished")

    # state.json says finished a moment before Slurm's COMPLETING becomes COMPLETED
    sweep = SweepPaths(path)
    wait_for(lambda: {s.state for s in slurm_status.slurm_states(sweep).values()} == {"COMPLETED"},
             30, "Slurm to report COMPLETED")
    view = view_of(path.name)
    assert slurm_status.with_slurm_states(view, sweep) == view  # all ended: no need to ask Slurm
    assert {j.state for j in view.jobs} == {"finished"}
    assert states(path) == ended  # status only reads
