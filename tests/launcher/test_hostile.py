"""What a careless or hostile co-tenant leaves in files: nothing crashes, nothing finished reruns.

These need no second unix user (tests/cotenants/ has the tests that do): the bad files are
written here by the test, as the co-tenant would write them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys

import pytest
from rundirs import make_sweep, set_state, state_of, view_of
from snapshots import NVML_FIXTURES
from test_executor import runs_of, start, sweep_file, wait_ended

from launcher.cli import main
from launcher.machine import leases, nvml
from launcher.machine.cpus import machine_cpus
from launcher.rundir import store
from launcher.rundir.layout import SweepPaths

ESCAPES = "\x1b[2J\x1b[31m\x07\x1b]0;pwned\x07"


def hold_with(lock_dir, name: str, said) -> int:
    """Hold a slot file whose metadata (old style: in the file) is whatever `said` is."""
    lock_dir.mkdir(exist_ok=True)
    lock_dir.chmod(0o1777)
    fd = os.open(lock_dir / name, os.O_RDWR | os.O_CREAT, 0o666)
    os.write(fd, said if isinstance(said, bytes) else json.dumps(said).encode())
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@pytest.mark.parametrize("said", [
    {"jobs_per_gpu": "zzz", "user": "bob", "sweep": "s", "job": "j"},
    {"user": ["x"], "job": 5, "sweep": None, "start": "yesterday", "pid": -1},
    {"user": f"eve{ESCAPES}", "sweep": f"s{ESCAPES}", "job": f"j{ESCAPES}", "host": ESCAPES},
    b"\xff\xfe not json at all",
])
def test_status_and_a_packing_neighbour_read_any_lease_metadata(lab, lock_dir, monkeypatch,
                                                                 capsys, said):
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(NVML_FIXTURES / "idle4.json"))
    uuid = nvml.query().gpus[0].uuid
    fd = hold_with(lock_dir, leases.gpu_slot_path(lock_dir, uuid, 0).name, said)
    try:
        for argv in (["status"], ["status", "--full"], ["status", "--json"]):
            assert main(argv) == 0
            out = capsys.readouterr().out
            assert "\x1b" not in out and "\x07" not in out
        json.loads(main(["status", "--json"]) == 0 and capsys.readouterr().out)
        from launcher.config.sweepfile import Resources
        from launcher.machine.placement import Grant, Placer

        packer = Placer("pack-1", Resources(cpu_budget=1, cpus_per_job=1,
                                            jobs_per_gpu=2).needs())
        grant = packer.grant("p1", {})  # never on GPU 0, whatever its holder said
        assert isinstance(grant, Grant) and grant.gpu_indices != (0,)
        grant.release()
    finally:
        os.close(fd)


def test_a_failed_jobs_kept_output_is_bounded_whatever_it_printed(tmp_path):
    log = tmp_path / "stdout.log"
    log.write_bytes(b"".join(b"\r%d%%|####" % (i % 100) for i in range(500_000)) + b"\nboom\n")
    tail = store.log_tail(log)
    assert len(tail.encode()) <= store.LOG_TAIL_MAX_BYTES and tail.endswith("boom")


def finished_sweep(lab, name: str, behaviour: str = "ok") -> str:
    """Return a sweep of two command jobs that ran to the end (ok: each wrote its result)."""
    path = sweep_file(lab / f"{name}.yaml", name, {"seed": [0, 1]},
                      {"gpus_per_job": 0, "cpu_budget": 1, "cpus_per_job": 1},
                      job={"seconds": 0.05, "behaviour": behaviour})
    sweep_id = start(path)
    assert {j.state for j in wait_ended(sweep_id).jobs} == {"finished"}
    return sweep_id


@pytest.mark.parametrize("damage", [b"", b'{"state": "fini', b"[1, 2]", b'{"state": "odd"}'])
@pytest.mark.parametrize("behaviour", ["ok", "quiet"])  # quiet: writes no result of its own
def test_a_torn_state_never_reruns_a_finished_job(lab, damage, behaviour):
    sweep_id = finished_sweep(lab, "torn", behaviour)
    paths = SweepPaths.of(sweep_id)
    first, second = view_of(sweep_id).jobs
    paths.job(first.job_id).state_json.write_bytes(damage)
    set_state(paths, second.job_id, "cancelled")  # something to resume: it runs again
    paths.job(second.job_id).result_json.unlink(missing_ok=True)
    assert state_of(sweep_id, first.job_id).reason == "its state file is unreadable"
    assert main(["status", sweep_id]) == 0
    assert main(["sweep", "--resume", sweep_id, "--detach"]) == 0
    view = wait_ended(sweep_id)
    assert [j.state for j in view.jobs] == ["finished", "finished"]
    runs = runs_of(sweep_id)
    assert len(runs[first.job_id]) == 1 and len(runs[second.job_id]) == 2


def test_restart_begins_a_named_job_again_and_leaves_the_others(lab, capsys):
    sweep_id = finished_sweep(lab, "again")
    first, second = view_of(sweep_id).jobs
    job = SweepPaths.of(sweep_id).job(first.job_id)
    job.checkpoint_pt.write_bytes(b"not a checkpoint")  # what --restart is for
    assert main(["sweep", "--resume", sweep_id, "--restart", first.job_id, "--detach"]) == 0
    assert f"restarting {first.job_id} from its beginning" in capsys.readouterr().err
    assert [j.state for j in wait_ended(sweep_id).jobs] == ["finished", "finished"]
    runs = runs_of(sweep_id)
    assert len(runs[first.job_id]) == 2 and len(runs[second.job_id]) == 1
    assert main(["sweep", "--resume", sweep_id, "--restart", "no-such-job", "--detach"]) == 2
    assert "no-such-job" in capsys.readouterr().err


def test_a_supervisor_that_died_while_stopping_leftovers_is_resumed_as_the_jobs_ended(lab):
    sweep_id = finished_sweep(lab, "stopping")
    ok, bad = view_of(sweep_id).jobs
    paths = SweepPaths.of(sweep_id)
    set_state(paths, ok.job_id, "stopping", exit_code=0, reason="its main process ended")
    set_state(paths, bad.job_id, "stopping", exit_code=1, reason="its main process ended")
    paths.job(bad.job_id).result_json.unlink()  # it failed: it wrote no finished result
    assert main(["sweep", "--resume", sweep_id, "--detach"]) == 0
    assert [j.state for j in wait_ended(sweep_id).jobs] == ["finished", "finished"]
    runs = runs_of(sweep_id)
    assert len(runs[ok.job_id]) == 1 and len(runs[bad.job_id]) == 2


@pytest.mark.parametrize("what, data", [
    ("sweep_json", b'{"jobs": 7}'), ("sweep_json", b""), ("supervisor_json", b'{"pid": "x"}'),
    ("supervisor_json", b'{"pid": 1, "create_time": "then", "error": ["x"]}'),
    ("specs_jsonl", b"\x00\x01"),
])
def test_a_malformed_file_of_one_sweep_never_hides_the_others(lab, capsys, what, data):
    broken = finished_sweep(lab, "broken")
    fine = make_sweep("fine-20261201-000000", [("a-00000001", {}, {})])
    getattr(SweepPaths.of(broken), what).write_bytes(data)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert fine.sweep_id in out and broken in out
    assert main(["status", "--json"]) == 0
    json.loads(capsys.readouterr().out)


def test_a_missing_spec_line_fails_that_job_only(lab):
    path = sweep_file(lab / "s.yaml", "holes", {"seed": [0, 1]},
                      {"gpus_per_job": 0, "cpu_budget": 1, "cpus_per_job": 1},
                      job={"seconds": 0.05})
    # A sweep folder with one line of its specs file gone, its supervisor not started yet.
    from launcher.commands import sweep as sweeping

    paths = sweeping.create_run_dir(*sweeping.load_plan(str(path), []), "local")
    lines = paths.specs_jsonl.read_text().splitlines(keepends=True)
    paths.specs_jsonl.write_text(lines[1])
    done = subprocess.run([sys.executable, "-m", "launcher.supervisor", str(paths.root)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    states = {j.state: j.reason for j in view_of(paths.sweep_id).jobs}
    assert states == {"failed": "its spec is missing from the sweep's specs file",
                      "finished": None}


def test_a_cpu_budget_past_the_machine_is_refused(lab, capsys):
    path = sweep_file(lab / "big.yaml", "big", {"seed": [0]},
                      {"gpus_per_job": 0, "cpu_budget": machine_cpus() + 1})
    assert main(["sweep", str(path), "--detach"]) == 2
    err = capsys.readouterr().err
    assert f"has {machine_cpus()} CPUs" in err and err.count("\n") == 1


def test_an_unsafe_lease_directory_stops_the_supervisor_with_one_line(lab, monkeypatch,
                                                                      capsys):
    (lab / "elsewhere").mkdir()
    os.symlink(lab / "elsewhere", lab / "linked")
    monkeypatch.setenv("LAUNCH_LOCK_DIR", str(lab / "linked"))
    path = sweep_file(lab / "s.yaml", "unsafe", {"seed": [0]}, {"gpus_per_job": 1,
                                                                  "cpu_budget": 1})
    assert main(["sweep", str(path), "--detach"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("launch: error: lease directory") and err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounts a tmpfs")
def test_a_full_disk_is_one_line_and_leaves_no_half_sweep(lab, monkeypatch, capsys):
    disk = lab / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        monkeypatch.setenv("LAUNCH_RUNS_DIR", str(disk / "runs"))
        path = sweep_file(lab / "s.yaml", "full", {"seed": list(range(400))},
                          {"gpus_per_job": 0, "cpu_budget": 1}, job={"pad": "x" * 400})
        assert main(["sweep", str(path), "--detach"]) == 2
        err = capsys.readouterr().err
        assert "No space left on device" in err and err.count("\n") == 1
        assert os.listdir(disk / "runs") == []  # the hidden half-written folder is gone
    finally:
        subprocess.run(["umount", str(disk)], check=False)
