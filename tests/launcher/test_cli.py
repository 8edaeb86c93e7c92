"""What users expect of the commands they type every day: a dry run that never starts
anything, resume with new limits, lost jobs said so, a version, a default --watch, a reader
that stops early, CPU waits that say who holds the CPUs, values shown where ids are cut."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from rundirs import make_sweep, set_state, state_of, view_of

from launcher.cli import build_parser, main
from launcher.machine import cpus, feasible, placement
from launcher.machine.gpus import GpuPolicy
from launcher.machine.users import current_user
from launcher.rundir.store import read_json
from launcher.rundir.sweepdir import SupervisorInfo, write_supervisor
from launcher.show import sweep_table
from launcher.show.views import JobView, SweepView

SWEEP = "demo-20261122-221414"
A, B = "a-00000001", "b-00000002"


@pytest.fixture
def stopped(runs):
    """A sweep of two command jobs: one finished, one cancelled; no supervisor."""
    paths = make_sweep(SWEEP, [(A, {"seed": 0}, {"command": ["true"], "seed": 0}),
                               (B, {"seed": 1}, {"command": ["true"], "seed": 1})],
                       resources={"gpus_per_job": 0, "cpus_per_job": 2, "cpu_budget": 2})
    set_state(paths, A, "finished", exit_code=0)
    set_state(paths, B, "cancelled", reason="launch cancel (signal 15 (SIGTERM))")
    return paths


@pytest.mark.parametrize("argv", [["--dry-run", "--resume", SWEEP],
                                  ["--resume", SWEEP, "--dry-run"],
                                  ["--resume", "--dry-run"]])
def test_a_dry_run_of_a_resume_starts_nothing(stopped, capsys, argv):
    assert main(["sweep", *argv]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (f"a resume of {SWEEP} would rerun 1 job (1 cancelled); "
                                   "1 finished stay as they are")
    assert f"  {B}  cancelled" in out and out.endswith("nothing written, nothing started\n")
    assert state_of(SWEEP, B).state == "cancelled"
    assert not stopped.supervisor_json.exists()


def test_resume_may_change_how_jobs_run_but_not_what_they_compute(stopped, lab, capsys):
    assert main(["sweep", "--resume", SWEEP, "job.epochs=3", "seeds=4", "grid.lr=1,2"]) == 2
    err = capsys.readouterr().err
    assert "--resume cannot change job.epochs, seeds, grid.lr: that changes what a job " \
           "computes" in err
    assert main(["sweep", "--resume", SWEEP, "max_retries=2", "resources.cpus_per_job=1",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "with max_retries=2 (was 0)" in out and "with resources.cpus_per_job=1 (was 2)" in out
    assert read_json(stopped.sweep_json)["max_retries"] == 0  # a dry run writes nothing
    assert main(["sweep", "--resume", SWEEP, "max_retries=2", "timeout_min=30",
                 "resources.cpus_per_job=1", "resources.cpu_budget=1", "--detach"]) == 0
    plan = read_json(stopped.sweep_json)
    assert (plan["max_retries"], plan["timeout_min"], plan["resources"]["cpus_per_job"]) == \
        (2, 30, 1)
    assert "resumed with max_retries=2 timeout_min=30" in stopped.sweep_yaml.read_text()
    from test_executor import wait_ended

    assert {j.state for j in wait_ended(SWEEP).jobs} == {"finished"}
    assert main(["sweep", "--resume", SWEEP, "resources.cpus_per_job=0"]) == 2
    assert "key 'resources.cpus_per_job': must be >= 1" in capsys.readouterr().err


def test_a_job_whose_supervisor_and_process_died_is_lost_not_running(runs, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", "")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    paths = make_sweep(SWEEP, [(A, {"seed": 0}, {}), (B, {"seed": 1}, {})])
    write_supervisor(paths, SupervisorInfo(pid=dead.pid, host=socket.gethostname(),
                                           create_time=time.time() - 100))
    set_state(paths, A, "running", pid=dead.pid, pid_create_time=time.time() - 90,
              host=socket.gethostname(), started=time.time() - 90, attempt=1, runs=1)
    view = view_of(SWEEP)
    assert view.supervisor == "dead"
    job = view.jobs[0]
    assert (job.state, job.elapsed_s) == ("lost", None)
    assert job.reason == f"supervisor dead; launch sweep --resume {SWEEP}"
    main(["status", SWEEP])
    out = capsys.readouterr().out
    assert "1 lost, 1 pending" in out
    row = next(line for line in out.splitlines() if line.startswith(f"  {A}"))
    assert " lost " in row and row.endswith(job.reason)


def test_a_version_and_a_default_watch(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("launch 0.")
    assert build_parser().parse_args(["status", "--watch"]).watch == 2.0
    assert build_parser().parse_args(["status", "--watch", "5"]).watch == 5.0


@pytest.mark.parametrize("argv", [["-m", "jobs", "SPEC", "--check"],
                                  ["-m", "launcher.cli", "keys"]])
def test_a_reader_that_stops_early_gets_no_traceback(tmp_path, argv):
    spec = tmp_path / "spec.json"
    spec.write_text('{"model": "tutorial_cnn"}')
    argv = [str(spec) if a == "SPEC" else a for a in argv]
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head` that has read all it wanted
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err and "Broken" not in err, err


def test_a_cpu_wait_says_who_holds_the_cpus(lock_dir):
    held = cpus.acquire_cpus(1, 1, {"user": "alice", "sweep": "other-1", "job": "j"})
    try:
        needs = feasible.Needs(gpus=0, cpus=1, cpu_budget=1, device="cpu", policy=GpuPolicy())
        reason = placement.Placer("mine-1", needs).grant("j", {})
        assert reason == f"CPU budget spent: 1 of 1 CPU held by {current_user()} 1; a job " \
            "needs 1"  # a holder is the owner of its lease's meta file
    finally:
        for lease in held:
            lease.release()


def test_status_shows_the_swept_values_where_the_ids_are_cut():
    def job(job_id: str, params: dict) -> JobView:
        return JobView(job_id=job_id, params=params, state="pending", attempt=0, runs=0,
                       gpus=(), gpu_indices=(), cpus=None, epoch=None, epochs=None,
                       val_accuracy=None, elapsed_s=None, eta_s=None, reason=None,
                       exit_code=None, signal=None, slurm_job_id=None)

    def rows(*jobs: JobView) -> list[str]:
        view = SweepView(sweep_id=SWEEP, name="demo", executor="local", created=0.0,
                         user="me", host="h", supervisor="running", jobs=jobs)
        return sweep_table.render_sweeps([view], None)

    short = rows(job("lr=0.1_seed=0-00000001", {"lr": 0.1, "seed": 0}))
    assert short[1].split() == ["JOB", "STATE", "GPU", "EPOCH", "VAL_ACC", "ELAPSED", "ETA"]
    long_id = "grad_noise=annealed_model=tutorial_cnn_repeat_seed=0-00000002"
    cut = rows(job(long_id, {"grad_noise": "annealed", "model": "tutorial_cnn_repeat",
                             "seed": 0}),
               job("seed=1-00000003", {"grad_noise": "relative", "model": "x", "seed": 1}))
    assert cut[1].split()[:5] == ["JOB", "GRAD_NOISE", "MODEL", "SEED", "STATE"]
    assert "~" in cut[2] and cut[2].split()[1:4] == ["annealed", "tutorial_cnn_repeat", "0"]
    assert cut[3].split()[1:4] == ["relative", "x", "1"]
