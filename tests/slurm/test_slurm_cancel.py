"""`launch cancel` ends a Slurm sweep's jobs as CANCELLED, and status says so."""

from __future__ import annotations

import pytest
from rundirs import job_ids, view_of
from slurmhelpers import cli, states, sweep_path, wait_for, write_sweep

from launcher.rundir.layout import SweepPaths
from launcher.slurm import query as slurm_status

pytestmark = pytest.mark.slurm

SLEEPERS = """\
name: cancel-me
job:
  command: [sleep, "{secs}"]
  secs: 300
grid:
  secs: [300, 301, 302]
resources: {gpus_per_job: 0, cpus_per_job: 1}
slurm: {time_min: 10, cpus_per_task: 1, array_parallelism: 2}
"""


def slurm_view(path):
    return {j.job_id: j for j in slurm_status.with_slurm_states(view_of(path.name),
                                                                SweepPaths(path)).jobs}


def test_cancel_one_job_then_the_sweep(cluster, capsys, tmp_path):
    code, out, err = cli(capsys, "sweep", write_sweep(tmp_path, "c", SLEEPERS),
                         "--executor", "slurm")
    assert code == 0, err
    path = sweep_path(cluster, out)
    first, second, third = job_ids(path.name)

    # array_parallelism 2: two run, the third waits for them, and status says why
    wait_for(lambda: [states(path)[j].get("state") for j in (first, second)] == ["running"] * 2,
             60, "two sleepers to run")
    view = wait_for(lambda: (v := slurm_view(path))[third].state == "pending" and v, 30,
                    "the third to be pending in Slurm")
    assert "PENDING" in view[third].reason and "JobArrayTaskLimit" in view[third].reason
    assert view[first].state == "running" and view[first].reason.startswith("slurm RUNNING")

    code, out, _ = cli(capsys, "cancel", f"{path.name}/{third}")
    assert code == 0 and third in out
    view = wait_for(lambda: (v := slurm_view(path))[third].reason.startswith("slurm CANCELLED")
                    and v, 15, "Slurm to cancel the pending task")
    assert view[third].state == "cancelled"
    assert view[first].state == view[second].state == "running"

    code, out, _ = cli(capsys, "cancel", path.name)
    assert code == 0 and "cancelled" in out
    def all_cancelled():
        words = {s.state for s in slurm_status.slurm_states(SweepPaths(path)).values()}
        return words == {"CANCELLED"} and slurm_view(path)

    view = wait_for(all_cancelled, 15, "Slurm to report every task CANCELLED")
    assert {j.state for j in view.values()} == {"cancelled"}
    # the nodes saw their sleepers stop after the cancel mark: cancelled, not preempted
    ended = wait_for(lambda: (s := states(path))[first].get("signal") and
                     s[second].get("signal") and s, 15, "the nodes to record the end")
    assert {s["state"] for s in ended.values()} == {"cancelled"}
    assert ended[first]["signal"] == 15  # SIGTERM from scancel

    code, out, _ = cli(capsys, "status", path.name)
    assert code in (0, 3) and out.count("cancelled") >= 3  # 3: no NVML on a GPU-less box

    # `launch sweep --resume` resubmits what was cancelled; cancelling again ends it for good
    old = {j: s.slurm_job_id for j, s in slurm_status.slurm_states(SweepPaths(path)).items()}
    code, out, _ = cli(capsys, "sweep", "--resume", path.name)
    assert code == 0 and "resubmitted 3 jobs" in out
    view = wait_for(lambda: (v := slurm_view(path)) and all(
        j.state in ("pending", "running") for j in v.values()) and v, 30, "the resubmitted jobs")
    assert all(j.slurm_job_id and j.slurm_job_id != old[j.job_id] for j in view.values())
    code, out, _ = cli(capsys, "cancel", path.name)
    assert code == 0
    wait_for(all_cancelled, 15, "Slurm to cancel the resubmitted jobs")
