"""The local executor with real processes and signals; only the GPUs are fake (snapshots).

Jobs are tests/launcher/fake_job.py, a command job that records the environment it was
given and when it ran, so the tests can check placement and the CPU budget afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launcher import rundir
from launcher.cli import main

HERE = Path(__file__).parent
FAKE_JOB = HERE / "fake_job.py"
FIXTURES = HERE.parent / "fixtures" / "nvml"


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A private runs dir and lease dir, and the idle 4-GPU box as the machine's GPUs."""
    monkeypatch.setenv("LAUNCH_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LAUNCH_LOCK_DIR", str(tmp_path / "leases"))
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(FIXTURES / "idle4.json"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sweep_file(path: Path, name: str, grid: dict, resources: dict, **extra) -> Path:
    """Write a sweep of fake jobs and return its path."""
    job = {"command": [sys.executable, str(FAKE_JOB), "{behaviour}", "{seconds}"],
           "behaviour": "ok", "seconds": 0.3, "seed": 0}
    job.update(extra.pop("job", {}))
    doc = {"name": name, "job": job, "grid": grid, "resources": resources, **extra}
    path.write_text(yaml.safe_dump(doc))
    return path


def start(path: Path, *args: str) -> str:
    """Start a sweep detached with `launch sweep`, return its id."""
    out = subprocess.run([sys.executable, "-m", "launcher.cli", "sweep", str(path), *args,
                          "--detach"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def wait_ended(sweep_id: str, timeout_s: float = 60) -> rundir.SweepView:
    """Wait for every job of the sweep to end; fail with the supervisor log if it does not."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        view = rundir.load_sweep_view(sweep_id)
        if all(j.state in rundir.ENDED_STATES for j in view.jobs) and view.supervisor != "running":
            return view
        time.sleep(0.1)
    log = (rundir.sweep_dir(sweep_id) / "supervisor.log").read_text()
    pytest.fail(f"sweep {sweep_id} did not end in {timeout_s} s:\n{log}")


def runs_of(sweep_id: str) -> dict[str, list[dict]]:
    """Return every recorded run of every job of a sweep."""
    info = rundir.read_sweep_info(sweep_id)
    return {j["id"]: rundir.read_jsonl(rundir.job_dir(sweep_id, j["id"]) / "runs.jsonl")
            for j in info["jobs"]}


def overlapping(runs: list[dict]) -> list[tuple[dict, dict]]:
    """Return the pairs of runs whose lifetimes overlap."""
    return [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]
            if a["start"] < b["end"] and b["start"] < a["end"]]


def test_twelve_jobs_on_four_gpus_never_share_a_gpu(lab, capsys):
    path = sweep_file(lab / "s.yaml", "twelve", {"seed": list(range(12))},
                      {"gpus_per_job": 1, "cpu_budget": 8, "cpus_per_job": 2})
    sweep_id = start(path)
    view = wait_ended(sweep_id)
    assert [j.state for j in view.jobs] == ["finished"] * 12
    runs = [r for rs in runs_of(sweep_id).values() for r in rs]
    assert len(runs) == 12
    uuids = {g["uuid"] for g in json.loads((FIXTURES / "idle4.json").read_text())["devices"]}
    assert {r["cuda"] for r in runs} <= uuids
    assert all(r["order"] == "PCI_BUS_ID" for r in runs)
    pairs = overlapping(runs)
    assert pairs, "with 4 GPUs and 12 jobs some jobs must have run at the same time"
    assert all(a["cuda"] != b["cuda"] for a, b in pairs)
    # What each job saw is what state.json says it was given.
    for job in view.jobs:
        (run,) = runs_of(sweep_id)[job.job_id]
        assert (run["cuda"],) == job.gpus
    assert main(["results", sweep_id]) == 0
    table = capsys.readouterr().out
    assert all(j.job_id in table for j in view.jobs)


def test_two_sweeps_at_once_share_gpus_and_cpu_budget_safely(lab):
    res = {"gpus_per_job": 1, "cpu_budget": 5, "cpus_per_job": 2}
    a = sweep_file(lab / "a.yaml", "alpha", {"seed": list(range(6))}, res)
    b = sweep_file(lab / "b.yaml", "beta", {"seed": list(range(6))}, res)
    procs = [subprocess.Popen([sys.executable, "-m", "launcher.cli", "sweep", str(p),
                               "--detach"], stdout=subprocess.PIPE, text=True) for p in (a, b)]
    ids = [p.communicate()[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    runs = []
    for sweep_id in ids:
        view = wait_ended(sweep_id)
        assert {j.state for j in view.jobs} == {"finished"}
        runs += [r for rs in runs_of(sweep_id).values() for r in rs]
    assert {r["sweep"] for r in runs} == set(ids)
    assert all(a["cuda"] != b["cuda"] for a, b in overlapping(runs))
    # At every moment a job started, the CPUs of all jobs alive then fit the budget.
    for r in runs:
        alive = [o for o in runs if o["start"] <= r["start"] < o["end"]]
        assert sum(o["workers"] + o["threads"] for o in alive) <= 5
    assert all(r["workers"] + r["threads"] == 2 for r in runs)


def test_sighup_to_the_terminal_session_does_not_stop_the_sweep(lab):
    path = sweep_file(lab / "s.yaml", "hup", {"seed": [0, 1, 2, 3]},
                      {"gpus_per_job": 1, "cpu_budget": 2, "cpus_per_job": 1},
                      job={"seconds": 1.0})
    # The follower runs in its own session, like a login shell's job; SIGHUP that session.
    follower = subprocess.Popen([sys.executable, "-m", "launcher.cli", "sweep", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    deadline = time.time() + 20
    while not rundir.list_sweeps() and time.time() < deadline:
        time.sleep(0.05)
    (sweep_id,) = rundir.list_sweeps()
    while not any(j.state == "running" for j in rundir.load_sweep_view(sweep_id).jobs):
        assert time.time() < deadline, "no job started"
        time.sleep(0.05)
    os.killpg(follower.pid, signal.SIGHUP)
    assert follower.wait(10) == -signal.SIGHUP
    view = wait_ended(sweep_id)
    assert [j.state for j in view.jobs] == ["finished"] * 4


def test_kill_9_supervisor_then_resume_runs_every_job_to_the_end_once(lab):
    path = sweep_file(lab / "s.yaml", "crash", {"seed": list(range(6)), "seconds": [0.2, 2.5]},
                      {"gpus_per_job": 1, "cpu_budget": 4, "cpus_per_job": 1})
    sweep_id = start(path)
    sup = rundir.read_json(rundir.sweep_dir(sweep_id) / "supervisor.json")
    deadline = time.time() + 30
    while True:  # kill it once a job has finished and a long one is half-way
        jobs = rundir.load_sweep_view(sweep_id).jobs
        long_ones = [j for j in jobs if j.state == "running" and j.params["seconds"] == 2.5]
        if any(j.state == "finished" for j in jobs) and any(
                (j.elapsed_s or 0) > 0.5 for j in long_ones):
            break
        assert time.time() < deadline, [j.state for j in jobs]
        time.sleep(0.05)
    os.kill(sup["pid"], signal.SIGKILL)
    view = wait_ended_or_dead(sweep_id)
    assert view.supervisor == "dead"
    done_before = {j.job_id for j in view.jobs if j.state == "finished"}
    assert main(["sweep", "--resume", sweep_id, "--detach"]) == 0
    view = wait_ended(sweep_id)
    assert [j.state for j in view.jobs] == ["finished"] * 12
    for job_id, runs in runs_of(sweep_id).items():
        completed = [r for r in runs if not r.get("terminated")]
        assert len(completed) == 1, (job_id, runs)
        if job_id in done_before:
            assert len(runs) == 1  # finished jobs are never run again
    killed = [rs for rs in runs_of(sweep_id).values() if len(rs) == 2]
    assert killed, "the supervisor's death must have stopped at least one running job"
    for first, second in killed:
        assert first["terminated"] and second["resumed_from"] == first["steps"] > 0


def wait_ended_or_dead(sweep_id: str, timeout_s: float = 20) -> rundir.SweepView:
    """Wait until no job of a sweep whose supervisor died is still alive."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        view = rundir.load_sweep_view(sweep_id)
        infos = [rundir.read_job_state(sweep_id, j.job_id) for j in view.jobs]
        from launcher import procs

        if not any(procs.same_process(i.get("pid", 0), i.get("pid_create_time"))
                   for i in infos if i["state"] == "running"):
            return view
        time.sleep(0.1)
    pytest.fail("jobs outlived their supervisor")


def test_failures_are_recorded_and_resume_reruns_only_them(lab):
    path = sweep_file(lab / "s.yaml", "fail", {"behaviour": ["ok", "exit3", "raise", "selfkill"]},
                      {"gpus_per_job": 1, "cpu_budget": 4, "cpus_per_job": 1},
                      job={"seconds": 0.1})
    sweep_id = start(path)
    view = wait_ended(sweep_id)
    by = {j.params["behaviour"]: j for j in view.jobs}
    assert by["ok"].state == "finished"
    assert (by["exit3"].state, by["exit3"].exit_code) == ("failed", 3)
    assert by["raise"].state == "failed" and by["raise"].exit_code == 1
    assert (by["selfkill"].state, by["selfkill"].signal) == ("failed", signal.SIGKILL)
    raised = rundir.read_job_state(sweep_id, by["raise"].job_id)
    assert "this job fails on purpose" in raised["log_tail"]
    assert main(["sweep", "--resume", sweep_id, "--detach"]) == 0
    wait_ended(sweep_id)
    runs = runs_of(sweep_id)
    assert len(runs[by["ok"].job_id]) == 1
    assert all(len(runs[by[b].job_id]) == 2 for b in ("exit3", "raise", "selfkill"))


def test_retries_timeout_and_cancel(lab):
    path = sweep_file(lab / "s.yaml", "limits", {"behaviour": ["exit3"]},
                      {"gpus_per_job": 1, "cpu_budget": 2, "cpus_per_job": 1},
                      job={"seconds": 0.05}, max_retries=2)
    view = wait_ended(start(path))
    (job,) = view.jobs
    assert job.state == "failed" and job.runs == 3
    path = sweep_file(lab / "t.yaml", "slow", {"seconds": [30, 31]},
                      {"gpus_per_job": 1, "cpu_budget": 2, "cpus_per_job": 1},
                      timeout_min=0.01)
    view = wait_ended(start(path), timeout_s=30)
    assert {j.state for j in view.jobs} == {"timeout"}
    path = sweep_file(lab / "c.yaml", "cancelme", {"seconds": [30, 31, 32]},
                      {"gpus_per_job": 1, "cpu_budget": 2, "cpus_per_job": 1})
    sweep_id = start(path)
    while not any(j.state == "running" for j in rundir.load_sweep_view(sweep_id).jobs):
        time.sleep(0.05)
    assert main(["cancel", sweep_id, "--grace", "5"]) == 0
    view = wait_ended(sweep_id, timeout_s=15)
    assert {j.state for j in view.jobs} == {"cancelled"}


def test_hostile_names_and_values_reach_the_job_as_data(lab):
    pwned = lab / "pwned"
    nasty = f"a b 'q' \"dq\" $(touch {pwned}); touch {pwned} `touch {pwned}`"
    path = lab / "h.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"x; touch {pwned} $(touch {pwned})",
        "job": {"command": [sys.executable, "-c",
                            "import os, sys; open(os.environ['LAUNCH_JOB_DIR'] + '/argv', 'w')"
                            ".write(sys.argv[1])", "{value}"], "value": nasty},
        "resources": {"gpus_per_job": 1, "cpu_budget": 1, "cpus_per_job": 1},
    }))
    sweep_id = start(path)
    view = wait_ended(sweep_id)
    assert [j.state for j in view.jobs] == ["finished"]
    assert (rundir.job_dir(sweep_id, view.jobs[0].job_id) / "argv").read_text() == nasty
    assert not pwned.exists()
    assert "/" not in sweep_id and " " not in sweep_id
