"""The local executor with real processes and signals; only the GPUs are fake (snapshots).

Jobs are tests/launcher/fake_job.py, a command job that records the environment it was
given and when it ran, so the tests can check placement and the CPU budget afterwards.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rundirs import job_dir, job_ids, state_of, view_of
from snapshots import NVML_FIXTURES as FIXTURES
from waiting import wait_for

from launcher.cli import main
from launcher.commands import sweep as sweeping
from launcher.machine.cpus import machine_cpus
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import ENDED_STATES
from launcher.rundir.store import read_json, read_jsonl
from launcher.rundir.sweepdir import list_sweeps, read_supervisor
from launcher.show import views

HERE = Path(__file__).parent
FAKE_JOB = HERE / "fake_job.py"
# Jobs at once are bounded by the machine's CPUs (one CPU token each); the tests that need
# jobs running side by side ask for two, and skip on a machine of one CPU.
CPUS = min(4, machine_cpus())
side_by_side = pytest.mark.skipif(CPUS < 2, reason="needs two CPUs to run two jobs at once")


def sweep_file(path: Path, name: str, grid: dict, resources: dict, **extra) -> Path:
    """Write a sweep of fake jobs and return its path."""
    job = {"command": [sys.executable, str(FAKE_JOB), "{behaviour}", "{seconds}"],
           "behaviour": "ok", "seconds": 0.3, "seed": 0, "seed_from_env": True}
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


def wait_ended(sweep_id: str, timeout_s: float = 60) -> views.SweepView:
    """Wait for every job of the sweep to end; fail with the supervisor log if it does not."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        view = view_of(sweep_id)
        if all(j.state in ENDED_STATES for j in view.jobs) and view.supervisor != "running":
            return view
        time.sleep(0.1)
    log = (SweepPaths.of(sweep_id).root / "supervisor.log").read_text()
    pytest.fail(f"sweep {sweep_id} did not end in {timeout_s} s:\n{log}")


def running(sweep_id: str) -> list[views.JobView]:
    """Return the jobs of a sweep that run now."""
    return [j for j in view_of(sweep_id).jobs if j.state == "running"]


def runs_of(sweep_id: str) -> dict[str, list[dict]]:
    """Return every recorded run of every job of a sweep."""
    return {j: read_jsonl(job_dir(sweep_id, j) / "runs.jsonl") for j in job_ids(sweep_id)}


def overlapping(runs: list[dict]) -> list[tuple[dict, dict]]:
    """Return the pairs of runs whose lifetimes overlap."""
    return [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]
            if a["start"] < b["end"] and b["start"] < a["end"]]


@side_by_side
def test_twelve_jobs_on_four_gpus_never_share_a_gpu(lab, capsys):
    path = sweep_file(lab / "s.yaml", "twelve", {"seed": list(range(12))},
                      {"gpus_per_job": 1, "cpu_budget": CPUS, "cpus_per_job": 1})
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


def gated_sweep(path: Path, name: str, gates: list[Path], resources: dict) -> Path:
    """Write a sweep whose jobs each wait for their own gate file before they run."""
    sweep_file(path, name, {"gate": [str(g) for g in gates]}, resources,
               job={"seconds": 0.2, "gate": "", "command": [
                   sys.executable, str(FAKE_JOB), "{behaviour}", "{seconds}", "{gate}"]})
    return path


def notice_of(lab: Path, sweep_id: str) -> Path:
    return lab / "leases" / "meta" / str(os.getuid()) / f"wait.{sweep_id}"


@side_by_side
def test_two_sweeps_at_once_share_gpus_and_cpu_budget_safely(lab):
    # Two jobs each, one CPU a job, a budget of two CPUs: the sweeps' jobs together never
    # hold more CPUs than the budget, and a sweep that waits for CPUs gets its turn.
    res = {"gpus_per_job": 1, "cpu_budget": 2, "cpus_per_job": 1}
    gates = {s: [lab / f"{s}{i}" for i in range(2)] for s in "ab"}
    # The same name twice: started in the same second, they must still get two run dirs.
    files = [gated_sweep(lab / f"{s}.yaml", "twin", gates[s], res) for s in "ab"]
    procs = [subprocess.Popen([sys.executable, "-m", "launcher.cli", "sweep", str(p),
                               "--detach"], stdout=subprocess.PIPE, text=True) for p in files]
    ids = [p.communicate()[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and len(set(ids)) == 2
    first = wait_for("the budget to be spent", lambda: (
        r := [(s, j) for s in ids for j in running(s)]) and len(r) == 2 and r)
    owners = {s for s, _ in first}
    if len(owners) == 1:  # one sweep took both CPUs: the other waits, and says so
        (waiter,) = set(ids) - owners
        wait_for("the waiting sweep's notice", notice_of(lab, waiter).exists)
        opened = Path(first[0][1].params["gate"])
        opened.touch()  # one job ends; its sweep gives the CPU to the waiting one
        wait_for("the waiting sweep's turn", lambda: running(waiter))
    for gate in [*gates["a"], *gates["b"]]:
        gate.touch()
    runs = []
    for sweep_id in ids:
        view = wait_ended(sweep_id)
        assert {j.state for j in view.jobs} == {"finished"}
        runs += [r for rs in runs_of(sweep_id).values() for r in rs]
    assert {r["sweep"] for r in runs} == set(ids)
    pairs = overlapping(runs)
    assert any(a["sweep"] != b["sweep"] for a, b in pairs), "the sweeps never ran together"
    assert all(a["cuda"] != b["cuda"] for a, b in pairs)
    # At every moment a job started, the CPUs of all jobs alive then fit the budget.
    for r in runs:
        alive = [o for o in runs if o["start"] <= r["start"] < o["end"]]
        assert sum(o["workers"] + o["threads"] for o in alive) <= 2
    assert all(r["workers"] + r["threads"] == 1 for r in runs)


def test_sighup_to_the_terminal_session_does_not_stop_the_sweep(lab):
    path = sweep_file(lab / "s.yaml", "hup", {"seed": [0, 1, 2, 3]},
                      {"gpus_per_job": 1, "cpu_budget": 2, "cpus_per_job": 1},
                      job={"seconds": 1.0})
    # The follower runs in its own session, like a login shell's job; SIGHUP that session.
    follower = subprocess.Popen([sys.executable, "-m", "launcher.cli", "sweep", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    (sweep,) = wait_for("the sweep's run directory", list_sweeps)
    sweep_id = sweep.sweep_id
    wait_for("a job to start", lambda: running(sweep_id))
    os.killpg(follower.pid, signal.SIGHUP)
    assert follower.wait(10) == -signal.SIGHUP
    view = wait_ended(sweep_id)
    assert [j.state for j in view.jobs] == ["finished"] * 4


def test_kill_9_supervisor_then_resume_runs_every_job_to_the_end_once(lab):
    path = sweep_file(lab / "s.yaml", "crash", {"seed": list(range(6)), "seconds": [0.2, 2.5]},
                      {"gpus_per_job": 1, "cpu_budget": CPUS, "cpus_per_job": 1})
    sweep_id = start(path)
    sup = read_supervisor(SweepPaths.of(sweep_id))
    def half_way() -> bool:  # a job has finished and a long one has made progress
        jobs = view_of(sweep_id).jobs
        steps = [read_json(job_dir(sweep_id, j.job_id) / "checkpoint") or 0
                 for j in jobs if j.state == "running" and j.params["seconds"] == 2.5]
        return any(j.state == "finished" for j in jobs) and max(steps, default=0) > 5

    wait_for("a finished job and a long one half-way", half_way)
    os.kill(sup.pid, signal.SIGKILL)
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


def wait_ended_or_dead(sweep_id: str, timeout_s: float = 20) -> views.SweepView:
    """Wait until no job of a sweep whose supervisor died is still alive."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        view = view_of(sweep_id)
        infos = [state_of(sweep_id, j.job_id) for j in view.jobs]
        from launcher.machine import procs

        if not any(procs.same_process(i.pid or 0, i.pid_create_time)
                   for i in infos if i.state == "running"):
            return view
        time.sleep(0.1)
    pytest.fail("jobs outlived their supervisor")


def test_failures_are_recorded_and_resume_reruns_only_them(lab):
    path = sweep_file(lab / "s.yaml", "fail", {"behaviour": ["ok", "exit3", "raise", "selfkill"]},
                      {"gpus_per_job": 1, "cpu_budget": CPUS, "cpus_per_job": 1},
                      job={"seconds": 0.1})
    sweep_id = start(path)
    view = wait_ended(sweep_id)
    by = {j.params["behaviour"]: j for j in view.jobs}
    assert by["ok"].state == "finished"
    assert (by["exit3"].state, by["exit3"].exit_code) == ("failed", 3)
    assert by["raise"].state == "failed" and by["raise"].exit_code == 1
    assert (by["selfkill"].state, by["selfkill"].signal) == ("failed", signal.SIGKILL)
    raised = state_of(sweep_id, by["raise"].job_id)
    assert "this job fails on purpose" in raised.log_tail
    assert main(["sweep", "--resume", sweep_id, "--detach"]) == 0
    wait_ended(sweep_id)
    runs = runs_of(sweep_id)
    assert len(runs[by["ok"].job_id]) == 1
    assert all(len(runs[by[b].job_id]) == 2 for b in ("exit3", "raise", "selfkill"))


ONE_AT_A_TIME = {"gpus_per_job": 1, "cpu_budget": 2, "cpus_per_job": 1}


def test_a_failing_job_is_retried_max_retries_times(lab):
    path = sweep_file(lab / "s.yaml", "limits", {"behaviour": ["exit3"]}, ONE_AT_A_TIME,
                      job={"seconds": 0.05}, max_retries=2)
    (job,) = wait_ended(start(path)).jobs
    assert job.state == "failed" and job.runs == 3


def test_a_job_past_its_timeout_is_stopped(lab):
    path = sweep_file(lab / "t.yaml", "slow", {"seconds": [30, 31]}, ONE_AT_A_TIME,
                      timeout_min=0.01)
    view = wait_ended(start(path), timeout_s=30)
    assert {j.state for j in view.jobs} == {"timeout"}


def test_cancel_one_job_then_the_sweep_then_resume(lab):
    path = sweep_file(lab / "c.yaml", "cancelme", {"seconds": [30, 31, 32]},
                      {"gpus_per_job": 1, "cpu_budget": 1, "cpus_per_job": 1})
    sweep_id = start(path)
    (first,) = wait_for("a job to start", lambda: running(sweep_id))
    queued = [j.job_id for j in view_of(sweep_id).jobs if j.state != "running"]
    # A queued job, not at the head of the queue: cancelled while it waits.
    assert main(["cancel", f"{sweep_id}/{queued[-1]}"]) == 0
    assert state_of(sweep_id, queued[-1]).state == "cancelled"
    assert running(sweep_id)[0].job_id == first.job_id  # the others go on
    assert main(["cancel", sweep_id, "--grace", "5"]) == 0
    view = wait_ended(sweep_id, timeout_s=15)
    assert {j.state for j in view.jobs} == {"cancelled"}
    assert read_json(job_dir(sweep_id, first.job_id) / "checkpoint") > 0
    # Resume runs them all again; the one that had started continues from its checkpoint.
    assert main(["sweep", "--resume", sweep_id, "--detach"]) == 0
    wait_for("the resumed sweep to run", lambda: running(sweep_id))
    assert main(["cancel", sweep_id, "--grace", "5"]) == 0
    runs = runs_of(sweep_id)[first.job_id]
    assert len(runs) == 2 and runs[1]["resumed_from"] >= runs[0]["steps"] > 0


def test_without_a_gpu_jobs_run_on_the_cpu_within_the_budget(lab, monkeypatch, capsys):
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(FIXTURES / "nodriver.json"))
    path = sweep_file(lab / "cpu.yaml", "cpu", {"seed": [0, 1, 2]},
                      {"gpus_per_job": 1, "cpu_budget": 2, "cpus_per_job": 1})
    assert main(["sweep", str(path), "--detach"]) == 0
    out = capsys.readouterr()
    assert "no NVIDIA driver found" in out.err and "jobs run on the CPU" in out.err
    view = wait_ended(out.out.strip())
    assert [j.state for j in view.jobs] == ["finished"] * 3
    runs = [r for rs in runs_of(view.sweep_id).values() for r in rs]
    assert {r["cuda"] for r in runs} == {""}
    for r in runs:  # never more than the budget's 2 CPUs in use
        assert sum(o["threads"] + o["workers"] for o in runs
                   if o["start"] <= r["start"] < o["end"]) <= 2
    gpu_only = sweep_file(lab / "gpu.yaml", "gpu", {"seed": [0]},
                          {"gpus_per_job": 1, "device": "gpu"})
    assert main(["sweep", str(gpu_only), "--detach"]) == 2
    assert "resources.device: gpu" in capsys.readouterr().err


def test_hostile_names_are_refused_and_values_reach_the_job_as_data(lab):
    pwned = lab / "pwned"
    nasty = f"a b 'q' \"dq\" $(touch {pwned}); touch {pwned} `touch {pwned}`"
    path = lab / "h.yaml"
    path.write_text(yaml.safe_dump({"name": f"x; touch {pwned}", "job": {"command": ["true"]}}))
    out = subprocess.run([sys.executable, "-m", "launcher.cli", "sweep", str(path), "--detach"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2 and "must be a plain name" in out.stderr
    assert not pwned.exists() and not list_sweeps()
    path.write_text(yaml.safe_dump({
        "name": "hostile-values",
        "job": {"command": [sys.executable, "-c",
                            "import os, sys; open(os.environ['LAUNCH_JOB_DIR'] + '/argv', 'w')"
                            ".write(sys.argv[1])", "{value}"], "value": nasty},
        "resources": {"gpus_per_job": 1, "cpu_budget": 1, "cpus_per_job": 1},
    }))
    sweep_id = start(path)
    view = wait_ended(sweep_id)
    assert [j.state for j in view.jobs] == ["finished"]
    assert (job_dir(sweep_id, view.jobs[0].job_id) / "argv").read_text() == nasty
    assert not pwned.exists()
    assert "/" not in sweep_id and " " not in sweep_id


def test_a_waiting_job_says_why_in_status(lab, monkeypatch, capsys):
    # On the busy box only GPU 2 is free: the second job waits for it, and says so.
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(FIXTURES / "busy4.json"))
    path = sweep_file(lab / "w.yaml", "wait", {"seed": [0, 1]}, ONE_AT_A_TIME | {"cpu_budget": 2},
                      job={"seconds": 4})
    sweep_id = start(path)

    def waiting():
        jobs = view_of(sweep_id).jobs
        return [j for j in jobs if j.state == "waiting"]

    (job,) = wait_for("a job to wait", waiting, timeout_s=15)
    assert "need 1 GPU, 0 free" in job.reason and "GPU 0 used by" in job.reason
    capsys.readouterr()
    main(["status", sweep_id])
    assert "need 1 GPU, 0 free" in capsys.readouterr().out
    assert main(["cancel", sweep_id, "--grace", "2"]) == 0


@side_by_side
def test_a_sweep_started_later_gets_a_gpu_before_the_first_sweep_ends(lab):
    # Two GPUs. Sweep A fills both with four jobs; B arrives while A's first two run.
    # Without turns, A's supervisor (woken at once by its job's end) would retake each GPU,
    # and B would start only after A's last job had started.
    res = {"gpus_per_job": 1, "include_gpus": [0, 1], "cpu_budget": 2, "cpus_per_job": 1}
    gates = [lab / f"a{i}" for i in range(4)]
    a = start(gated_sweep(lab / "a.yaml", "first", gates, res))
    wait_for("A to run two jobs", lambda: len(running(a)) == 2)
    b = start(sweep_file(lab / "b.yaml", "later", {"seed": [0, 1]}, res, job={"seconds": 0.2}))
    notice = notice_of(lab, b)
    wait_for("B to say it waits", notice.exists)
    Path(running(a)[0].params["gate"]).touch()  # one of A's jobs ends: its GPU is B's turn
    wait_for("B to run", lambda: running(b) or view_of(b).counts().get("finished"))
    for gate in gates:
        gate.touch()
    for sweep_id in (a, b):
        assert {j.state for j in wait_ended(sweep_id).jobs} == {"finished"}
    starts = {s: sorted(r["start"] for rs in runs_of(s).values() for r in rs) for s in (a, b)}
    assert starts[b][0] < starts[a][-1], starts
    assert not notice.exists()  # withdrawn once B had a GPU


def test_sweep_and_resume_warn_where_logout_would_kill_the_sweep(lab, monkeypatch, capsys):
    from launcher.local import logind

    seen = []
    monkeypatch.setattr(logind, "logout_warning", lambda user: seen.append(user) or "it dies")
    path = sweep_file(lab / "s.yaml", "logout", {"seed": [0]}, {"gpus_per_job": 0})
    assert main(["sweep", str(path), "--detach"]) == 0
    printed = capsys.readouterr()
    sweep_id = printed.out.split()[0]
    assert "launch: warning: it dies" in printed.err and len(seen) == 1
    wait_ended(sweep_id)
    assert main(["cancel", sweep_id]) == 0 and main(["sweep", "--resume", sweep_id]) == 0
    assert len(seen) == 1  # nothing to resume: no supervisor, so no warning


def test_resume_on_a_machine_that_lost_its_driver_fails_as_a_start_would(lab, monkeypatch,
                                                                         capsys):
    path = sweep_file(lab / "g.yaml", "needgpu", {"behaviour": ["exit3"]},
                      {"gpus_per_job": 1, "device": "gpu", "cpu_budget": 1, "cpus_per_job": 1},
                      job={"seconds": 0.05})
    sweep_id = start(path)
    assert [j.state for j in wait_ended(sweep_id).jobs] == ["failed"]
    before = read_supervisor(SweepPaths.of(sweep_id))
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(FIXTURES / "nodriver.json"))  # a reboot later
    capsys.readouterr()
    assert main(["sweep", str(path), "--detach"]) == 2
    as_a_start = capsys.readouterr().err
    assert main(["sweep", "--resume", sweep_id, "--detach"]) == 2
    err = capsys.readouterr().err
    assert err == as_a_start and err.count("\n") == 1 and "resources.device: gpu" in err
    assert read_supervisor(SweepPaths.of(sweep_id)) == before  # no supervisor was started
    assert [j.state for j in view_of(sweep_id).jobs] == ["failed"]  # nothing was reset


def test_a_supervisor_that_meets_a_user_error_records_it_for_status_and_follow(
        lab, monkeypatch, capsys):
    from launcher.show import follow

    path = sweep_file(lab / "g.yaml", "stops", {"seed": [0]},
                      {"gpus_per_job": 1, "device": "gpu", "cpu_budget": 1, "cpus_per_job": 1})
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(FIXTURES / "nodriver.json"))
    paths = sweeping.create_run_dir(*sweeping.load_plan(str(path), []), "local")
    # A supervisor that finds the machine changed under it (the driver gone since the start).
    done = subprocess.run([sys.executable, "-m", "launcher.supervisor", str(paths.root)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    view = view_of(paths.sweep_id)
    assert view.supervisor == "dead" and "no NVIDIA driver found" in view.error
    assert main(["status", paths.sweep_id]) == 3  # no driver: exit 3, the sweep shown all the same
    out = capsys.readouterr().out
    assert out.count("no NVIDIA driver found") == 2  # the machine's line, and the sweep's once
    assert f"SUPERVISOR STOPPED: {view.error}" in out and "--resume" not in out
    assert follow.follow_sweep(paths, out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err == f"launch: error: {view.error}\n"


def test_sweep_ids_are_unique_on_the_machine_across_runs_folders(lab, tmp_path):
    from rundirs import make_sweep

    from launcher.rundir.sweepdir import JobEntry, create_sweep, new_info

    info = new_info("twin-20261201-120000", "twin", "local", [JobEntry("j-00000001", {})])
    first = create_sweep(info, "", ["{}"], tmp_path / "runs-a")
    second = create_sweep(info, "", ["{}"], tmp_path / "runs-b")  # same second, other folder
    assert (first.sweep_id, second.sweep_id) == ("twin-20261201-120000",
                                                 "twin-20261201-120000-2")
    assert make_sweep("other-20261201-120000", []).sweep_id == "other-20261201-120000"


def test_leftover_processes_are_found_by_sweep_id_and_run_folder_together(lab, tmp_path):
    from launcher.machine import procs

    mine, theirs = tmp_path / "runs-a" / "s-1", tmp_path / "runs-b" / "s-1"
    sleepers = [subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, "LAUNCH_SWEEP_ID": "s-1", "LAUNCH_JOB_ID": "j",
             "LAUNCH_JOB_DIR": str(root / "jobs" / "j")}) for root in (mine, theirs)]
    try:
        found = procs.job_processes("s-1", str(mine))
        assert found == {"j": [sleepers[0].pid]}  # an old-style id clash finds only ours
        assert procs.job_processes("s-1", str(mine), newer_than=sleepers[1].pid) == {}
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()


def test_a_job_ends_whole_before_its_gpu_and_cpus_go_to_the_next(lab):
    # Two jobs, one GPU, one CPU. Each leaves a child in a session of its own that closed
    # its lease files: the next job must not start until that child is gone.
    gate = lab / "gate"
    path = lab / "leave.yaml"
    path.write_text(yaml.safe_dump({
        "name": "leave",
        "job": {"command": [sys.executable, str(HERE / "leaver_job.py"), str(gate)], "n": 0},
        "grid": {"n": [0, 1]},
        "resources": {"gpus_per_job": 1, "include_gpus": [0], "cpu_budget": 1,
                      "cpus_per_job": 1}}))
    sweep_id = start(path)
    stopping = wait_for("a job to be stopping", lambda: [
        j for j in view_of(sweep_id).jobs if j.state == "stopping"])
    assert "stopping 1 process it left" in stopping[0].reason
    assert not any(j.state == "running" for j in view_of(sweep_id).jobs)  # nothing took it
    gate.touch()
    view = wait_ended(sweep_id)
    assert [j.state for j in view.jobs] == ["finished", "finished"]
    children = {j.job_id: read_jsonl(job_dir(sweep_id, j.job_id) / "child.jsonl")
                for j in view.jobs}
    first, second = sorted(children.values(), key=lambda c: c[0]["time"])
    assert [e["event"] for e in first] == ["start", "sigterm", "end"]
    assert second[0]["time"] > first[-1]["time"]  # the next job started after it had ended
