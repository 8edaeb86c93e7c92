"""`launch status`: golden output for every fixture, and the command end to end.

Regenerate the golden files after an intended change of output with
    LAUNCH_UPDATE_GOLDEN=1 pytest tests/launcher/test_status.py
and read the diff before committing it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rundirs import make_sweep, set_state, view_of
from snapshots import NVML_FIXTURES as FIXTURES

from launcher.commands import status
from launcher.contract import format_duration
from launcher.machine import leases, nvml
from launcher.machine.cpus import CpuUse
from launcher.machine.users import current_user
from launcher.rundir.layout import SweepPaths
from launcher.show import status_render, sweep_table
from launcher.show.views import JobView, SweepView

TESTS = Path(__file__).resolve().parent.parent
GOLDEN = TESTS / "golden" / "status"
ALL = sorted(p.stem for p in FIXTURES.glob("*.json"))
NOW = 1795376095.0  # 2026-11-22 19:34:55 UTC
UPDATE = os.environ.get("LAUNCH_UPDATE_GOLDEN") == "1"


def job(job_id: str, state: str, **kw) -> JobView:
    base = dict(job_id=job_id, params={}, state=state, attempt=1, runs=1, gpus=(),
                gpu_indices=(), cpus=4, epoch=None, epochs=22, val_accuracy=None, elapsed_s=None,
                eta_s=None, reason=None, exit_code=None, signal=None, slurm_job_id=None)
    return JobView(**{**base, **kw})


def sweep(sweep_id: str, supervisor: str, jobs, created: float) -> SweepView:
    return SweepView(sweep_id=sweep_id, name=sweep_id.split("-")[0], executor="local",
                     created=created, user="carol", host="athena", supervisor=supervisor,
                     jobs=tuple(jobs))


def sweeps_for(snap: nvml.Snapshot | None) -> list[SweepView]:
    uuid = snap.gpus[-1].uuid if snap and snap.gpus else None
    running = [
        job("resnet9-lr=0.01-s0-1a2b3c4d", "running", gpus=(uuid,) if uuid else (),
            gpu_indices=(3,), epoch=12, val_accuracy=0.913, elapsed_s=312.0, eta_s=260.0),
        job("alexnet-lr=0.01-s0-5e6f7a8b", "finished", epoch=22, val_accuracy=0.7712,
            elapsed_s=1500.0, exit_code=0),
        job("inception-lr=0.01-s0-9c0d1e2f", "waiting",
            reason="need 1 GPU, 0 free: GPU 0 used by alice, root; GPU 1 used by bob"),
        job("ensemble-lr=0.01-s0-0f1e2d3c", "failed", epoch=3, val_accuracy=0.41,
            elapsed_s=95.0, exit_code=1, reason="exit 1: CUDA out of memory",
            log_tail="Traceback (most recent call last):\ntorch.OutOfMemoryError: CUDA OOM"),
        job("alexnet-lr=0.001-s0-4b5c6d7e", "oom", epoch=5, val_accuracy=0.52,
            elapsed_s=400.0, exit_code=1, reason="oom on GPU 2 at 10.8 GiB (1.1 GiB free: "
            "alice's process grew); retry 1/2 waits for 12.0 GiB free"),
        *[job(f"resnet9-lr=0.001-s{i}-{i}a{i}b{i}c{i}d", "pending", attempt=0, runs=0)
          for i in range(7)],
    ]
    return [
        sweep("cifar-20261120-101010", "ended",
              [job(f"tutorial_cnn-s{i}-aa{i}", "finished", epoch=22, val_accuracy=0.6,
                   elapsed_s=600.0) for i in range(3)], created=NOW - 2 * 86400),
        sweep("demo-20261121-080000", "dead",
              [job("demo-s0-12345678", "running", epoch=1, epochs=2, elapsed_s=40000.0),
               job("demo-s1-87654321", "pending", attempt=0, runs=0),
               job("demo-s2-24681357", "cancelled", epoch=1, epochs=2, elapsed_s=30.0,
                   signal=15)], created=NOW - 86400),
        sweep("cifar-20261122-193455", "running", running, created=NOW - 600),
    ]


def leases_for(snap: nvml.Snapshot | None) -> list[leases.GpuLease]:
    if not snap or not snap.gpus:
        return []
    held = []
    last = snap.gpus[-1]
    if last.uuid:
        held.append(leases.GpuLease(last.uuid, 0, "carol", "athena", 70101,
                                    "cifar-20261122-193455", "resnet9-lr=0.01-s0-1a2b3c4d",
                                    NOW - 312))
    for gpu in snap.gpus:
        for mig in gpu.mig_devices[1:2]:
            held.append(leases.GpuLease(mig.uuid, 0, "dave", "zeus", 4321, "mig-20261122-000000",
                                        "small-s0-abcdef01", NOW - 60))
    return held


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# The machine-wide CPU budget as status shows it: tokens held by two users' jobs.
CPU_USE = CpuUse(usable=64, held=6, by_user=(("alice", 4), ("bob", 2)))


def inputs(name: str, monkeypatch):
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(FIXTURES / f"{name}.json"))
    try:
        snap, error = nvml.query(), None
    except nvml.NvmlUnavailable as exc:
        snap, error = None, str(exc)
    return snap, leases_for(snap), sweeps_for(snap), NOW, error, "athena"


def check_golden(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with LAUNCH_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize("name", ALL)
def test_golden_status(name, monkeypatch, utc):
    check_golden(GOLDEN / f"{name}.txt",
                 status_render.render_status(*inputs(name, monkeypatch), cpu_use=CPU_USE))


@pytest.mark.parametrize("name", ALL)
def test_golden_full(name, monkeypatch, utc):
    check_golden(GOLDEN / f"{name}.full.txt",
                 status_render.render_full(*inputs(name, monkeypatch), cpu_use=CPU_USE))


@pytest.mark.parametrize("name", ALL)
def test_golden_json(name, monkeypatch, utc):
    data = status_render.status_json(*inputs(name, monkeypatch), cpu_use=CPU_USE)
    check_golden(GOLDEN / f"{name}.json", json.dumps(data, indent=1) + "\n")


def test_json_keys_are_stable(monkeypatch):
    data = status_render.status_json(*inputs("busy4", monkeypatch))
    assert list(data) == ["format", "host", "time", "nvml_error", "driver_version",
                          "cuda_driver_version", "gpus", "cpus", "leases_protected", "sweeps",
                          "user"]
    gpu = data["gpus"][3]
    assert gpu["leases"][0]["job"] == "resnet9-lr=0.01-s0-1a2b3c4d"
    assert gpu["processes"][0] == {"pid": 70101, "memory_used_bytes": 20480 * 1024 * 1024,
                                   "type": "C", "user": "carol", "command": gpu["processes"][0]
                                   ["command"]}
    assert data["sweeps"][2]["counts"] == {"running": 1, "finished": 1, "waiting": 1,
                                           "failed": 1, "oom": 1, "pending": 7}


def test_status_shows_gpu_lines_leases_and_jobs(monkeypatch):
    text = status_render.render_status(*inputs("busy4", monkeypatch))
    lines = text.splitlines()
    assert lines[0].startswith("athena  2026-11-2") and "driver 565.57.01  CUDA 12.7" in lines[0]
    assert "alice(40960M)" in lines[1] and "?(512M)" in lines[2]
    assert lines[4].endswith("lease carol:cifar-20261122-193455/resnet9-lr=0.01-s0-1a2b3c4d")
    assert "SUPERVISOR DEAD (launch sweep --resume demo-20261121-080000)" in text
    assert "  ... 2 more pending" in text
    assert "waiting    -" in text and "GPU 0 used by alice, root" in text
    assert "91.30%" in text and "5m12s" in text and "4m20s" in text


def test_no_driver_prints_the_message_then_the_jobs(monkeypatch):
    text = status_render.render_status(*inputs("nodriver", monkeypatch))
    message = "launch: no NVIDIA driver found on athena (NVML: LibraryNotFound)"
    assert text.splitlines()[1] == message
    assert "cifar-20261122-193455" in text


def test_duration():
    assert [format_duration(s) for s in (None, 5, 312, 7500, 200000)] == \
        ["-", "5s", "5m12s", "2h05m", "2d07h"]


@pytest.fixture
def machine(runs, lock_dir, monkeypatch):
    """A run directory with one sweep of ours, a lease on GPU 2 and the busy box."""
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(FIXTURES / "busy4.json"))
    sweep_id = "demo-20261122-120000"
    paths = make_sweep(sweep_id, [("a-s0-00000001", {"seed": 0}, {"epochs": 2}),
                                  ("b-s1-00000002", {"seed": 1}, {"epochs": 2})])
    uuid = nvml.query().gpus[2].uuid
    set_state(paths, "a-s0-00000001", "running", attempt=1, runs=1, gpus=[uuid],
              gpu_indices=[2], started=time.time() - 65)
    set_state(paths, "b-s1-00000002", "waiting",
              reason="need 1 GPU, 0 free: GPU 0 used by alice")
    [held] = leases.acquire_gpus([uuid], 1, 1, {"user": "carol", "sweep": sweep_id,
                                                "job": "a-s0-00000001"})
    yield sweep_id
    held.release()


def test_run_status_reads_the_machine(machine, capsys):
    assert status.run_status() == 0
    out = capsys.readouterr().out
    gpu2 = [line for line in out.splitlines() if line.startswith("[2]")][0]
    assert gpu2.endswith(f"lease {current_user()}:{machine}/a-s0-00000001")  # its folder's owner
    assert "a-s0-00000001  running    2" in out
    assert "b-s1-00000002  waiting    -" in out and "GPU 0 used by alice" in out


def test_a_failed_jobs_exit_status_is_its_reason(machine, capsys):
    # The local supervisor records exit_code or signal, no reason: status says which.
    for job_id, how in (("a-s0-00000001", {"exit_code": 3}), ("b-s1-00000002", {"signal": 9})):
        set_state(SweepPaths.of(machine), job_id, "failed", started=NOW - 60, ended=NOW,
                  log_tail="boom", **how)
    assert status.run_status(sweep=machine) == 0
    out = capsys.readouterr().out
    rows = [s for s in out.splitlines() if s.startswith("  ") and "-0000000" in s]  # job rows
    assert rows[0].startswith("  a-s0-00000001  failed     -") and rows[0].endswith("  exit 3")
    assert rows[1].endswith("  signal 9 (SIGKILL)")
    assert view_of(machine).jobs[0].log_tail == "boom"


def test_status_says_in_one_line_when_leases_are_not_protected(machine, capsys):
    assert status.run_status() == 0
    out = capsys.readouterr().out
    assert out.count("not protected") == 1 and "sudo launch setup" in out
    assert status.run_status(as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["leases_protected"] is False


def test_run_status_json_and_one_sweep(machine, capsys):
    assert status.run_status(as_json=True, sweep="demo") == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["sweep_id"] for s in data["sweeps"]] == [machine]
    assert data["gpus"][2]["leases"][0]["user"] == current_user()


def test_run_status_without_driver_exits_3_and_still_shows_jobs(machine, monkeypatch, capsys):
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(FIXTURES / "nodriver.json"))
    assert status.run_status(full=True) == status.EXIT_NO_NVML == 3
    out = capsys.readouterr().out
    assert "launch: no NVIDIA driver found on athena (NVML: LibraryNotFound)" in out
    assert machine in out and "a-s0-00000001" in out


def test_watch_redraws_until_ctrl_c_then_exits_0(machine):
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "status", "--watch", "0.05"],
                            stdout=subprocess.PIPE, text=True)
    try:
        frames = 0
        for line in proc.stdout:
            frames += line.startswith("athena  ")
            if frames == 2:
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert frames == 2


def test_status_never_imports_torch(machine):
    # dataclasses pulls in inspect, ast and dis: a third of status's time budget.
    heavy = ('torch', 'submitit', 'numpy', 'yaml', 'dataclasses')
    # launcher.slurm.query too: status imports it when a Slurm sweep is shown.
    code = ("import sys; from launcher.cli import main; import launcher.slurm.query; "
            "rc = main(['status']); "
            f"bad = [m for m in {heavy!r} if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_big_sweeps_count_what_they_do_not_list():
    jobs = tuple(job(f"f{i:02d}-0000000{i % 10}", "finished", epoch=22, val_accuracy=0.5)
                 for i in range(15)) + (job("r-00000001", "running", epoch=1),)
    view = sweep("big-20261122-000000", "running", jobs, created=NOW)
    text = "\n".join(sweep_table.render_sweeps([view], None))
    assert "  ... 5 more finished" in text
    assert "f14-" in text and "f04-" not in text and "r-00000001" in text  # newest finished kept
    everything = "\n".join(sweep_table.render_sweeps([view], None, one_sweep=True))
    assert "f00-" in everything and "more" not in everything
