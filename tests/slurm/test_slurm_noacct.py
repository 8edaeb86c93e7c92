"""With accounting_storage/none (no sacct) status and results still work, and
nothing waits forever. Runs on the second test cluster (`start-cluster.sh --no-accounting`),
whose MaxArraySize of 2 also makes a 3-job sweep two arrays (of two jobs and of one)."""

from __future__ import annotations

import json

import pytest
from rundirs import set_state, view_of
from slurmhelpers import (
    cli,
    results_states,
    sweep_path,
    tiny_job,
    wait_ended,
    wait_for,
    write_sweep,
)

from launcher.rundir.layout import SweepPaths
from launcher.rundir.store import atomic_write_json
from launcher.slurm import query as slurm_status

pytestmark = pytest.mark.slurm


def test_no_accounting_status_results_and_split(noacct_cluster, capsys, tmp_path):
    assert slurm_status.run_query(["sacct", "-n", "-X"]) is None  # accounting really is off
    assert slurm_status.max_array_size() == 2
    file = write_sweep(tmp_path, "noacct", "name: noacct\n" + tiny_job(epochs=1) + (
        "seeds: 3\nresources: {gpus_per_job: 1, cpus_per_job: 1}\n"
        "slurm: {time_min: 10, cpus_per_task: 1, gpus_per_node: 1}\n"))
    code, out, err = cli(capsys, "sweep", file, "--executor", "slurm")
    assert code == 0, err
    path = sweep_path(noacct_cluster, out)
    arrays = json.loads((path / "slurm.json").read_text())["submissions"][0]["arrays"]
    assert [len(a["jobs"]) for a in arrays] == [2, 1]
    assert f"Slurm job {arrays[0]['slurm_job_id']}, {arrays[1]['slurm_job_id']}" in err

    states = wait_for(lambda: (s := slurm_status.slurm_states(SweepPaths(path))) and all(
        x.state == "RUNNING" or x.state == "COMPLETED" for x in s.values()) and s,
        90, "squeue to show the jobs running")
    assert {s.source for s in states.values()} == {"squeue"}

    ended = wait_ended(path)
    assert {s["state"] for s in ended.values()} == {"finished"}, ended
    lone = arrays[1]["jobs"][0]
    assert ended[lone]["slurm_job_id"] == f"{arrays[1]['slurm_job_id']}_0"  # an array of one

    assert set(results_states(capsys, path.name).values()) == {"finished"}
    assert len(results_states(capsys, path.name)) == 3
    view = slurm_status.with_slurm_states(view_of(path.name), SweepPaths(path))
    assert {j.state for j in view.jobs} == {"finished"}


def test_forgotten_jobs_fall_back_to_state_files(noacct_cluster, tmp_path):
    # Ids Slurm never had (or forgot after MinJobAge): with no sacct, only the files remain.
    file = write_sweep(tmp_path, "gone", "name: gone\n" + tiny_job() + "seeds: 2\n"
                       "resources: {gpus_per_job: 0, cpus_per_job: 1}\n")
    from launcher.commands import sweep as sweeping

    sweep, plans = sweeping.load_plan(file, [])
    paths = sweeping.create_run_dir(sweep, plans, "slurm")
    done, running = (p.job_id for p in plans)
    atomic_write_json(paths.slurm_json, {
        "format": "launch-slurm/1", "mode": "submitit", "submissions": [],
        "jobs": {done: "699998_0", running: "699998_1"}})
    set_state(paths, done, "finished")
    set_state(paths, running, "running")
    states = slurm_status.slurm_states(paths)
    assert {s.source for s in states.values()} == {"files"}
    view = {j.job_id: j for j in slurm_status.with_slurm_states(view_of(paths.sweep_id),
                                                                paths).jobs}
    assert view[done].state == "finished"
    assert view[running].state == "running" and "not known to Slurm" in view[running].reason
    paths.cancel_mark.write_text("")  # cancelled, and its node died before writing the end
    view = {j.job_id: j for j in slurm_status.with_slurm_states(view_of(paths.sweep_id),
                                                                paths).jobs}
    assert view[running].state == "cancelled"
