"""`launch setup`: the lease directory made root's, so that no user can break a lease."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from snapshots import NVML_FIXTURES

from launcher.cli import main
from launcher.commands import setup
from launcher.machine import cpus, leasedir, leases, nvml, ports

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="launch setup runs as root")


@as_root
def test_setup_protects_the_directory_and_every_slot_and_is_idempotent(lock_dir, tmp_path,
                                                                       monkeypatch, capsys):
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(NVML_FIXTURES / "mig.json"))
    held = leases.try_lock_slot(leasedir.lock_dir() / "cpu.0", {"sweep": "before"})  # running
    os.mkfifo(lock_dir / "gpu.planted")
    tmpfiles = tmp_path / "launch.conf"
    assert main(["setup", "--slots-per-gpu", "2", "--tmpfiles", str(tmpfiles)]) == 0
    assert "protected" in capsys.readouterr().out
    assert leasedir.protected(lock_dir)
    st = os.lstat(lock_dir)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    for shared in ("meta", "sweeps"):
        assert stat.S_IMODE(os.lstat(lock_dir / shared).st_mode) == 0o1777
    snapshot = nvml.query()
    uuids = [u for g in snapshot.gpus for u in [g.uuid, *(m.uuid for m in g.mig_devices)] if u]
    names = {f"cpu.{n}" for n in range(cpus.machine_cpus())}
    names |= {leases.card_path(Path("."), u).name for u in uuids}
    names |= {leases.gpu_slot_path(Path("."), u, k).name for u in uuids for k in range(2)}
    names |= set(ports.slot_names())
    for name in names:
        st = os.lstat(lock_dir / name)
        assert stat.S_ISREG(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o444
    # The lease taken before setup still holds; leases are taken read-only from now on.
    assert leases.try_lock_slot(lock_dir / "cpu.0", {}) is None
    held.release()
    assert leases.try_lock_slot(lock_dir / "cpu.0", {}) is not None
    text = tmpfiles.read_text()
    assert f"d {lock_dir} 0755 root root -" in text and f"f {lock_dir}/cpu.0 0444" in text
    assert main(["setup", "--slots-per-gpu", "2", "--tmpfiles", str(tmpfiles)]) == 0
    assert "0 made" in capsys.readouterr().out


def test_setup_needs_root(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["setup"]) == 2
    assert "run it as root (sudo launch setup)" in capsys.readouterr().err


def test_the_files_setup_makes_for_a_machine():
    snapshot = nvml.parse(__import__("json").loads((NVML_FIXTURES / "idle4.json").read_text()))
    names = setup.wanted_files(snapshot, 3, 2)
    assert names[:3] == ["cpu.0", "cpu.1", f"port.{ports.FIRST_PORT}"]
    assert len(names) == 2 + ports.PORTS + 4 * (1 + 3)
