"""The Slurm executor's pure parts, golden sbatch scripts, and status when Slurm hangs.

No cluster needed. Regenerate the golden scripts after an intended change with
    LAUNCH_UPDATE_GOLDEN=1 pytest tests/slurm/test_slurm_units.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from rundirs import make_sweep, set_state, view_of

from launcher.cli import main
from launcher.commands import sweep as sweeping
from launcher.config.ids import make_sweep_id
from launcher.config.sweepfile import SlurmConfig
from launcher.errors import UserError
from launcher.machine.cpus import CpuShare
from launcher.rundir.layout import JobPaths, SweepPaths
from launcher.rundir.state import read_state
from launcher.rundir.store import atomic_write_json, read_json
from launcher.rundir.sweepdir import clear_cancel_requests, list_sweeps, request_cancel
from launcher.slurm import query as slurm_status
from launcher.slurm import sbatch
from launcher.slurm import submit as slurm
from launcher.slurm import task as slurm_task

GOLDEN = Path(__file__).parent.parent / "golden" / "sbatch"
NVML = Path(__file__).parent.parent / "fixtures" / "nvml"
DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"
UPDATE = os.environ.get("LAUNCH_UPDATE_GOLDEN") == "1"
PYTHON = "/opt/venv/bin/python"
HOSTILE_NAME = "evil 'q' \"dq\" $(touch /tmp/pwned); rm -rf ~\nnext `id`"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with LAUNCH_UPDATE_GOLDEN=1"
    assert text == path.read_text()


GOLDEN_CASES = {
    "plain.sbatch": ("demo-20260101-120000", 6, SlurmConfig(gpus_per_node=1, cpus_per_task=4)),
    "full.sbatch": ("cifar-20260101-120000", 24, SlurmConfig(
        gpus_per_node=2, cpus_per_task=8, partition="gpu", time_min=120, mem_gb=31.5,
        account="proj-42", qos="high", constraint="a100", array_parallelism=4,
        sbatch_lines=("#SBATCH --exclusive", "#SBATCH --mail-type=END"),
        setup=("module load cuda/12.4", "source ~/venvs/launch/bin/activate"))),
    "cpu.sbatch": ("cmd-20260101-120000", 1, SlurmConfig(gpus_per_node=0, cpus_per_task=1)),
    "hostile.sbatch": (make_sweep_id(HOSTILE_NAME, datetime(2026, 1, 1)), 3,
                       SlurmConfig(gpus_per_node=1, cpus_per_task=2)),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_sbatch(name):
    sweep_id, n_jobs, cfg = GOLDEN_CASES[name]
    text = sbatch.render_sbatch(sweep_id, Path("/shared/runs") / sweep_id, n_jobs, cfg, PYTHON)
    check_golden(name, text)
    for needle in ("touch", "pwned", "rm -rf", "`", "'q'", "next"):
        assert needle not in text.replace(sweep_id, "SWEEP"), needle


def test_sbatch_refuses_paths_and_lines_it_cannot_hold():
    cfg = SlurmConfig(gpus_per_node=0, cpus_per_task=1)
    with pytest.raises(UserError, match="LAUNCH_RUNS_DIR"):
        sbatch.render_sbatch("x-1", Path("/home/o'brien/runs/x-1"), 2, cfg, PYTHON)
    for bad in ("#SBATCH -p gpu", "#SBATCH --x\nrm -rf /", "#SBATCH echo hi", "#SBATCH"):
        with pytest.raises(UserError, match="sbatch_lines"):
            sbatch.parse_sbatch_line(bad)
    assert sbatch.parse_sbatch_line("#SBATCH --exclusive") == ("exclusive", True)
    assert sbatch.parse_sbatch_line("#SBATCH --mail-type=END") == ("mail-type", "END")
    assert sbatch.parse_sbatch_line("#SBATCH --reservation day") == ("reservation", "day")


def test_submitit_parameters_ask_what_the_script_asks():
    sweep_id, _, cfg = GOLDEN_CASES["full.sbatch"]
    params = sbatch.submitit_parameters(cfg, sweep_id, hold=True)
    assert params == {
        "job_name": sweep_id, "time": 120, "cpus_per_task": 8, "gres": "gpu:2",
        "partition": "gpu", "account": "proj-42", "qos": "high", "constraint": "a100",
        "signal_delay_s": 90,
        "setup": ["module load cuda/12.4", "source ~/venvs/launch/bin/activate"],
        "additional_parameters": {"mem": "32256M", "requeue": True, "exclusive": True,
                                  "mail-type": "END", "hold": True},
    }
    plain = sbatch.submitit_parameters(SlurmConfig(gpus_per_node=0, cpus_per_task=1), "x")
    assert "gres" not in plain
    assert "hold" not in plain["additional_parameters"]


def test_split_array_by_max_array_size():
    assert sbatch.split_array(0, 1001) == []
    assert sbatch.split_array(6, 1001) == [range(0, 6)]
    assert sbatch.split_array(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert sbatch.split_array(2002, 1001) == [range(0, 1001), range(1001, 2002)]


def test_parse_squeue_and_sacct_rows():
    text = ("12_3|RUNNING|None|node7\n12_[4-6,9%2]|PENDING|JobArrayTaskLimit|\n"
            "13|CANCELLED by 0|None|None assigned\nbad line\n")
    rows = slurm_status.parse_table(text)
    assert [r["id"] for r in rows] == ["12_3", "12_4", "12_5", "12_6", "12_9", "13"]
    assert rows[0] == {"id": "12_3", "state": "RUNNING", "reason": None, "node": "node7"}
    assert rows[1]["reason"] == "JobArrayTaskLimit" and rows[1]["node"] is None
    assert rows[-1]["state"] == "CANCELLED"


@pytest.mark.parametrize("word, file_state, marked, want", [
    ("PENDING", "pending", False, "pending"),
    ("PENDING", "preempted", False, "pending"),  # requeued, waiting to resume
    ("RUNNING", "running", False, "running"),
    ("RUNNING", "preempted", False, "running"),  # the requeued task started again
    ("COMPLETING", "preempted", False, "preempted"),
    ("COMPLETED", "finished", False, "finished"),
    ("FAILED", "failed", False, "failed"),
    ("FAILED", "finished", False, "finished"),  # its result is on disk
    ("CANCELLED", "running", False, "cancelled"),  # killed before its node wrote the end
    ("TIMEOUT", "running", False, "timeout"),
    ("OUT_OF_MEMORY", "running", False, "failed"),
    (None, "running", False, "running"),
    (None, "running", True, "cancelled"),
    (None, "finished", True, "finished"),
])
def test_merged_state(word, file_state, marked, want):
    st = slurm_status.SlurmState("j", "1_0", word, "Priority" if word == "PENDING" else None, "n1",
                          "squeue")
    state, reason = slurm_status.merged_state(st, file_state, marked)
    assert state == want
    if word == "PENDING":
        assert reason == "slurm PENDING (Priority)"


def test_status_never_hangs_on_a_stuck_controller(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("squeue", "sacct"):
        (bin_dir / tool).write_text("#!/bin/sh\nexec sleep 600\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(slurm_status, "QUERY_TIMEOUT_S", 0.5)
    sweep = SweepPaths(tmp_path / "s-1")
    sweep.job("a").dir.mkdir(parents=True)
    atomic_write_json(sweep.sweep_json, {"sweep_id": "s-1", "jobs": [{"id": "a"}]})
    atomic_write_json(sweep.slurm_json, {"jobs": {"a": "5_0"}})
    assert slurm_status.slurm_states(sweep) == {
        "a": slurm_status.SlurmState("a", "5_0", None, None, None, "files")}


def test_tasks_found_by_name_map_to_jobs_only_from_one_array(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_status, "max_array_size", lambda: 3)
    sweep = SweepPaths(tmp_path)
    sbatch.write_jobs_list(sweep, ["a", "b", "c"])
    one = [{"id": "77_1"}, {"id": "77_0"}, {"id": "12"}, {"id": "77_7"}]
    assert slurm_status.by_name_ids(one, sweep) == {"a": "77_0", "b": "77_1"}
    # Two arrays by that name (slices with LAUNCH_ARRAY_OFFSET, or a resubmission): task 905_0
    # may be job "a" or a job further on, so only the jobs' own state files name them.
    assert slurm_status.by_name_ids([*one, {"id": "905_0"}], sweep) == {}
    # Over MaxArraySize the sweep went in slices: the one array left may be an offset one.
    monkeypatch.setattr(slurm_status, "max_array_size", lambda: 2)
    assert slurm_status.by_name_ids(one, sweep) == {}


def test_shared_storage_warning():
    assert "under /tmp" in sbatch.shared_storage_warning(Path("/tmp/runs/x"))
    assert sbatch.shared_storage_warning(Path("/home/alice/runs/x")) is None


def test_task_environment_from_the_allocation():
    env = {"SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "44",
           "CUDA_VISIBLE_DEVICES": "2", "SLURM_CPUS_PER_TASK": "4", "PATH": "/bin"}
    assert slurm_task.slurm_job_id(env) == "40_3"
    assert slurm_task.slurm_job_id({"SLURM_JOB_ID": "44"}) == "44"
    assert slurm_task.allocated_gpus(env) == ["2"]
    assert slurm_task.allocated_cpus(env, {}) == 4
    assert slurm_task.allocated_cpus({}, {"cpus_per_task": 3}) == 3
    share = slurm_task.task_share(4, {})
    assert (share.num_workers, share.num_threads) == (3, 1)  # workers = cpus_per_task - 1
    assert slurm_task.task_share(4, {"num_workers": 1}).num_workers == 1
    out = slurm_task.task_env(env, CpuShare(4, 3, 1), "s-1", JobPaths(Path("/r/s-1/jobs/j")))
    assert out["CUDA_VISIBLE_DEVICES"] == "2" and out["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert (out["OMP_NUM_THREADS"], out["MKL_NUM_THREADS"], out["LAUNCH_NUM_WORKERS"]) == \
        ("1", "1", "3")
    assert (out["LAUNCH_SWEEP_ID"], out["LAUNCH_JOB_ID"]) == ("s-1", "j")
    # No GPU asked for: the task sees none. GPUs asked for, but Slurm named no devices
    # (count-only GRES): the job keeps the node's GPUs rather than silently using the CPU.
    bare = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
    share = CpuShare(4, 3, 1)
    job = JobPaths(Path("/s/jobs/j"))
    assert slurm_task.task_env(bare, share, "s", job)["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in slurm_task.task_env(bare, share, "s", job, 1)


@pytest.mark.parametrize("status, cancelled, requeued, terminated, command, want", [
    (0, True, False, False, False, "finished"),
    (75, False, False, False, False, "preempted"),  # Slurm's SIGTERM reached the child alone
    (75, True, False, False, False, "cancelled"),
    (75, False, True, False, False, "preempted"),
    (2, False, False, False, False, "failed"),
    (2, False, False, True, False, "preempted"),
    (-15, False, False, False, True, "preempted"),
    (-9, False, False, False, False, "failed"),
])
def test_how_a_task_ends(runs, tmp_path, status, cancelled, requeued, terminated, command, want):
    job = {"command": ["true"], "seed": 0} if command else {"model": "tutorial_cnn", "seed": 0}
    (tmp_path / "s.yaml").write_text(f"name: ends\njob: {job}\n")
    sweep, plans = sweeping.load_plan(str(tmp_path / "s.yaml"), [])
    paths = sweeping.create_run_dir(sweep, plans, "slurm")
    task = slurm_task.Task(paths.job(plans[0].job_id).dir, env={})
    if cancelled:
        request_cancel(paths, None, grace_s=0)
    task.requeued, task.terminated = requeued, terminated
    assert task.record_end(status) == want
    assert read_state(task.job).state == want


def fake_tools(tmp_path: Path, monkeypatch, **scripts: str) -> None:
    """Put shell scripts named like Slurm's tools first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool, body in scripts.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


@pytest.fixture
def written(runs, tmp_path, monkeypatch, capsys) -> Path:
    """The run directory `launch sbatch configs/demo.yaml -o x.sbatch` writes; not submitted."""
    fake_tools(tmp_path, monkeypatch, squeue="exit 0", sacct="exit 0")  # Slurm knows nothing
    assert main(["sbatch", str(DEMO), "-o", "x.sbatch"]) == 0
    (path,) = (tmp_path / "runs").iterdir()
    assert "submit: sbatch x.sbatch" in capsys.readouterr().out
    return SweepPaths(path)


def test_a_script_not_yet_submitted_says_so(written, tmp_path):
    assert read_json(written.slurm_json)["script"] == str(tmp_path / "x.sbatch")
    view = slurm_status.with_slurm_states(view_of(written.sweep_id), written)
    assert {(j.state, j.reason) for j in view.jobs} == {
        ("pending", "script written, not submitted (sbatch x.sbatch)")}
    # A node has started a job: the script was submitted, and Slurm forgetting a job means
    # something else now.
    first = view.jobs[0].job_id
    set_state(written, first, "running", slurm_job_id="7_0")
    view = slurm_status.with_slurm_states(view_of(written.sweep_id), written)
    assert {j.reason for j in view.jobs} == {slurm_status.NOT_KNOWN}
    record = {"mode": "submitit", "script": "x.sbatch"}
    assert slurm_status.unknown_reason(record, {}, ["pending"], "/") == slurm_status.NOT_KNOWN
    old = {"mode": "sbatch", "jobs_list": "/r/s-1/slurm/jobs.txt"}  # before "script" was kept
    assert slurm_status.unknown_reason(old, {}, ["pending"], "/home", named=0) == \
        "script written, not submitted (sbatch /r/s-1/slurm/sweep.sbatch)"


@pytest.mark.parametrize("squeue", [
    "exit 1",                                # the controller did not answer
    "echo '905_0|PENDING|None|'; echo '77_1|PENDING|None|'",  # slices: no task mapped by name
])
def test_not_submitted_is_said_only_when_slurm_answered_nothing(written, tmp_path,
                                                                 monkeypatch, squeue):
    fake_tools(tmp_path, monkeypatch, squeue=squeue)
    view = slurm_status.with_slurm_states(view_of(written.sweep_id), written)
    # Telling the user to run sbatch now would submit the sweep twice.
    assert {j.reason for j in view.jobs} != {"script written, not submitted (sbatch x.sbatch)"}
    assert all("not submitted" not in (j.reason or "") for j in view.jobs)


def test_sbatch_into_a_missing_folder_leaves_no_run_dir(runs, tmp_path, capsys):
    assert main(["sbatch", str(DEMO), "-o", str(tmp_path / "no" / "x.sbatch")]) == 2
    assert "folder" in capsys.readouterr().err
    assert list_sweeps(tmp_path / "runs") == []


@pytest.mark.parametrize("scancel, says", [
    ("exec sleep 600", "scancel did not answer in 0.3 s: is slurmctld up?"),
    ("echo 'scancel: error: Access/permission denied' >&2; echo more >&2; exit 1",
     "scancel failed: scancel: error: Access/permission denied"),
    (None, "cannot run scancel (No such file or directory): is Slurm installed here?"),
])
def test_a_failed_scancel_is_one_plain_line(written, tmp_path, monkeypatch, capsys,
                                           scancel, says):
    monkeypatch.setattr(slurm, "QUERY_TIMEOUT_S", 0.3)
    if scancel is None:
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # squeue and sacct, no scancel
    else:
        fake_tools(tmp_path, monkeypatch, scancel=scancel)
    assert main(["cancel", written.sweep_id]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"launch: error: {says} (6 jobs not started yet marked "
                          "cancelled here: a task Slurm starts for one ends at once;")
    assert err.count("\n") == 1 and "Traceback" not in err and "Command '[" not in err
    assert err.endswith(f"run `scancel --name={written.sweep_id}` once it answers, for the "
                        "running ones and the queue)\n")
    view = view_of(written.sweep_id)
    assert {j.state for j in view.jobs} == {"cancelled"}


def test_a_task_marked_cancelled_does_not_start_its_job(runs, tmp_path):
    # scancel failed (controller down), so the mark is all that stops the job when Slurm
    # starts the task later on.
    ran = tmp_path / "ran"
    (tmp_path / "s.yaml").write_text(
        "name: marked\njob: {command: [touch, " + str(ran) + "], seed: 0}\n"
        "resources: {gpus_per_job: 0}\n")
    sweep, plans = sweeping.load_plan(str(tmp_path / "s.yaml"), [])
    paths = sweeping.create_run_dir(sweep, plans, "slurm")
    job = paths.job(plans[0].job_id)
    job_dir = job.dir
    request_cancel(paths, None, grace_s=0)
    env = {**os.environ, "SLURM_JOB_ID": "77", "SLURM_ARRAY_JOB_ID": "77",
           "SLURM_ARRAY_TASK_ID": "0", "SLURM_CPUS_PER_TASK": "1"}
    out = subprocess.run([sys.executable, "-m", "launcher.slurm_task", str(job_dir)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    state = read_state(job)
    assert state.state == "cancelled"
    assert state.reason == "launch cancel, before it started"
    assert not ran.exists()
    clear_cancel_requests(paths, [])
    out = subprocess.run([sys.executable, "-m", "launcher.slurm_task", str(job_dir)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert ran.exists() and read_state(job).state == "finished"


def two_slurm_sweeps(runs) -> list[SweepPaths]:
    """Two Slurm sweeps, submitted (their tasks known), one job each still pending."""
    out = []
    for n, name in enumerate(("one-20261122-221414", "two-20261122-221415")):
        paths = make_sweep(name, [(f"a-0000000{n}", {"seed": 0}, {"command": ["true"]})],
                           runs, executor="slurm")
        atomic_write_json(paths.slurm_json, {"mode": "submitit", "jobs": {
            f"a-0000000{n}": f"7{n}_0"}})
        out.append(paths)
    return out


def test_status_asks_slurm_once_and_says_when_it_does_not_answer(runs, tmp_path,
                                                                  monkeypatch, capsys):
    calls = tmp_path / "calls"
    fake_tools(tmp_path, monkeypatch, squeue=f"echo \"$@\" >> {calls}\nexec sleep 600",
               sacct=f"echo sacct >> {calls}\nexec sleep 600")
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(NVML / "idle4.json"))
    sweeps = two_slurm_sweeps(runs)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert out.count(slurm_status.NOT_ANSWERING) == 2, out
    assert "not known to Slurm" not in out
    (call,) = calls.read_text().splitlines()  # one question for both sweeps, no sacct
    assert f"--name={sweeps[0].sweep_id},{sweeps[1].sweep_id}" in call


def test_status_reads_slurm_s_one_answer_for_every_sweep(runs, tmp_path, monkeypatch, capsys):
    calls = tmp_path / "calls"
    rows = "70_0|RUNNING|None|node1|one-20261122-221414\\n71_0|PENDING|Priority|"
    fake_tools(tmp_path, monkeypatch, squeue=f"echo call >> {calls}\nprintf '{rows}|"
               "two-20261122-221415\\n'")
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(NVML / "idle4.json"))
    two_slurm_sweeps(runs)
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    jobs = {s["sweep_id"]: s["jobs"][0] for s in data["sweeps"]}
    assert jobs["one-20261122-221414"]["state"] == "running"
    assert jobs["one-20261122-221414"]["reason"] == "slurm RUNNING on node1"
    assert jobs["two-20261122-221415"]["reason"] == "slurm PENDING (Priority)"
    assert calls.read_text().count("call") == 1


def test_status_of_a_slurm_sweep_on_a_login_node_without_gpus(runs, tmp_path, monkeypatch,
                                                               capsys):
    fake_tools(tmp_path, monkeypatch, squeue="exit 0")
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(NVML / "nodriver.json"))
    (paths, _) = two_slurm_sweeps(runs)
    assert main(["status", paths.sweep_id]) == 0  # the driver is not that sweep's business
    out = capsys.readouterr().out
    assert "NVIDIA" not in out and "driver" not in out and paths.sweep_id in out
    assert main(["status"]) == 3  # this machine's own view still says it has no driver
    assert "driver" in capsys.readouterr().out


def test_a_script_never_submitted_is_no_pending_sweep(written, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(NVML / "idle4.json"))
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(written.sweep_id))
    assert line == (f"{written.sweep_id}  slurm  script written, not submitted "
                    "(sbatch x.sbatch): 6 jobs")
    assert "pending" not in out  # no jobs listed as waiting in a queue
    assert main(["forget", written.sweep_id, "--delete"]) == 0
    assert not written.root.exists()


def test_setup_lines_run_after_set_e_so_a_failing_one_stops_the_task(tmp_path):
    cfg = SlurmConfig(gpus_per_node=0, cpus_per_task=1, setup=("false", "touch ran"))
    text = sbatch.render_sbatch("s-20260101-120000", tmp_path / "s-20260101-120000", 1, cfg)
    script = tmp_path / "x.sbatch"
    script.write_text(text)
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "SLURM_ARRAY_TASK_ID": "0"}, timeout=60)
    assert done.returncode == 1 and not (tmp_path / "ran").exists(), done.stderr
