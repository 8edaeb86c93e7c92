"""Snapshots: replay goes through the capture code and gives the file back exactly."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.commands import snapshot
from launcher.errors import UserError
from launcher.machine import gpus, holders, leases, nvml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"
ALL = sorted(p.stem for p in FIXTURES.glob("*.json"))


def test_fixture_set_is_complete():
    assert {"idle4", "busy4", "notsupported", "lost", "mig", "nodriver", "mixed",
            "eight"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_capture_from_replay_gives_the_snapshot_back(name, monkeypatch):
    path = FIXTURES / f"{name}.json"
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(path))
    raw = nvml.capture_raw()
    assert raw == json.loads(path.read_text())
    assert snapshot.dumps(raw) == path.read_text()  # byte for byte, key order included


def test_run_snapshot_prints_the_replayed_snapshot(monkeypatch, capsys):
    path = FIXTURES / "mig.json"
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(path))
    assert snapshot.run_snapshot(anonymize=False) == 0
    assert capsys.readouterr().out == path.read_text()


def test_run_snapshot_without_driver_still_records_it(monkeypatch, capsys):
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(FIXTURES / "nodriver.json"))
    assert snapshot.run_snapshot() == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["init_error"] == "LibraryNotFound"
    assert "no NVIDIA driver found on athena" in out.err


def test_anonymize_hides_people_and_hardware_ids_but_keeps_the_picture(tmp_path, monkeypatch):
    raw = json.loads((FIXTURES / "busy4.json").read_text())
    anon = snapshot.anonymized(raw)
    text = json.dumps(anon)
    for secret in ("athena", "alice", "bob", "carol", "big.yaml", "kernel-3.json",
                   raw["devices"][0]["uuid"]):
        assert secret not in text
    owners = anon["processes"]
    assert owners["48213"] == {"user": "user1", "cmdline": ["python"]}
    assert owners["60012"] == {"error": "NoSuchProcess"}
    assert owners["2381"]["user"] == "root"
    assert anon["devices"][0]["uuid"] == snapshot.anonymized(raw)["devices"][0]["uuid"]
    assert anon["devices"][0]["uuid"].startswith("GPU-") and len(anon["devices"][0]["uuid"]) == 40
    # Still a snapshot that replays and tells the same story.
    out = tmp_path / "anon.json"
    out.write_text(snapshot.dumps(anon))
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(out))
    assert nvml.capture_raw() == anon
    snap = nvml.query()
    assert snap.host == "host"
    assert [len(g.processes) for g in snap.gpus] == [2, 2, 0, 1]


def test_unreadable_snapshot_is_a_user_error(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(bad))
    with pytest.raises(UserError, match="not a launch-nvml-snapshot/1 file"):
        nvml.query()
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(UserError, match="cannot read snapshot"):
        nvml.query()


def _real_raw() -> dict:
    saved = os.environ.pop(nvml.SNAPSHOT_ENV, None)
    try:
        raw = nvml.capture_raw()
    finally:
        if saved is not None:
            os.environ[nvml.SNAPSHOT_ENV] = saved
    if raw["init_error"] or not raw["devices"]:
        pytest.skip(f"no usable NVIDIA GPU here ({raw['init_error'] or 'no devices'})")
    return raw


@pytest.mark.gpu
def test_real_gpu_snapshot_round_trip(tmp_path, monkeypatch):
    raw = _real_raw()
    path = tmp_path / "real.json"
    path.write_text(snapshot.dumps(raw))
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(path))
    assert nvml.capture_raw() == raw
    assert len(nvml.query().gpus) == len(raw["devices"])


CUDA_CHILD = """
import sys, time, torch
x = torch.ones(64 * 1024 * 1024, device="cuda")  # 256 MiB, enough to show in NVML
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.gpu
def test_cuda_job_with_a_lease_runs_on_exactly_its_uuid(tmp_path, monkeypatch):
    _real_raw()
    monkeypatch.delenv(nvml.SNAPSHOT_ENV, raising=False)
    before = nvml.query()
    units = [u for _, u in gpus.units(before) if u is not None and u.uuid]
    target = units[-1]  # the last one: differs from CUDA's default device 0 when there are two
    lease = leases.try_lock_slot(leases.gpu_slot_path(tmp_path, target.uuid, 0),
                                 {"user": "test", "uuid": target.uuid})
    assert lease is not None
    seen_before = {(u.uuid, p.pid) for _, u in gpus.units(before) if u for p in u.processes}
    env = {**os.environ, **gpus.job_env([target.uuid])}
    child = subprocess.Popen([sys.executable, "-c", CUDA_CHILD], env=env, stdout=subprocess.PIPE,
                             text=True, pass_fds=lease.fds)
    try:
        assert child.stdout.readline().strip() == "ready"
        lease.close()  # the child alone holds the lease now
        deadline, new = time.time() + 20, set()
        while time.time() < deadline and not new:
            now = nvml.query()
            new = {(u.uuid, p.pid) for _, u in gpus.units(now) if u for p in u.processes}
            new -= seen_before
            time.sleep(0.2)
        mine = {uuid for uuid, pid in new if pid == child.pid}
        # In a container NVML reports host PIDs; then the only new process must be on target.
        assert mine == {target.uuid} if mine else {uuid for uuid, _ in new} == {target.uuid}
        assert holders.read_slots(lease.path.parent, [lease.path.name])[0].held
    finally:
        child.kill()
        child.wait()
