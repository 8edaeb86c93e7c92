"""The NVML layer: every field on its own, lost GPUs, MIG, owners, no driver."""

import json
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from launcher.errors import UserError
from launcher.machine import nvml
from launcher.machine.replay import FakeNvml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"
MIB = 1024 * 1024


def load(name: str, monkeypatch) -> nvml.Snapshot:
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(FIXTURES / f"{name}.json"))
    return nvml.query()


def test_busy_box_fields_and_owners(monkeypatch):
    snap = load("busy4", monkeypatch)
    assert (snap.host, snap.driver_version, snap.cuda_driver_version) == \
        ("athena", "565.57.01", 12070)
    g0, g1 = snap.gpus[0], snap.gpus[1]
    assert g0.name == "NVIDIA H100 80GB HBM3"
    assert g0.pci_bus_id == "00000000:19:00.0"
    assert g0.memory_total_bytes == 85520809984
    assert g0.memory_used_bytes == 41506 * MIB
    assert g0.memory_reserved_bytes == 553648128
    assert g0.utilization_gpu_percent == 97 and g0.temperature_c == 64
    assert g0.fan_percent is None  # SXM card: NotSupported
    assert g0.power_mw == 612000 and g0.power_limit_mw == 700000
    assert [(p.pid, p.user, p.type) for p in g0.processes] == \
        [(2381, "root", "G"), (48213, "alice", "C")]
    assert g0.processes[1].command == "python train.py --config big.yaml"
    # A PID that no longer resolves still counts as a process, owner unknown.
    gone = [p for p in g1.processes if p.pid == 60012][0]
    assert (gone.user, gone.command, gone.memory_used_bytes) == ("?", "?", 512 * MIB)


def test_not_supported_fields_are_none_and_memory_falls_back_to_v1(monkeypatch):
    snap = load("notsupported", monkeypatch)
    g = snap.gpus[1]
    assert (g.temperature_c, g.fan_percent, g.power_mw, g.power_limit_mw, g.mig_mode) == \
        (None, None, None, None, None)
    assert g.memory_reserved_bytes is None  # v1 has no reserved field
    assert g.memory_used_bytes == 9001 * MIB
    assert g.utilization_gpu_percent == 35
    assert not g.lost


def test_lost_gpu_is_a_row_marked_lost(monkeypatch):
    snap = load("lost", monkeypatch)
    assert [g.lost for g in snap.gpus] == [False, False, True, False]
    lost = snap.gpus[2]
    assert (lost.index, lost.error, lost.name, lost.uuid) == (2, "GpuIsLost", None, None)
    assert snap.gpus[3].processes[0].user == "erin"


def test_a_field_lost_mid_query_marks_the_gpu_lost():
    raw = json.loads((FIXTURES / "idle4.json").read_text())
    raw["devices"][1]["temperature_c"] = {"error": "GpuIsLost"}
    raw["devices"][1]["power_mw"] = {"error": "Unknown"}
    raw["devices"][2]["power_mw"] = {"error": "Unknown"}
    snap = nvml.parse(raw)
    assert [g.lost for g in snap.gpus] == [False, True, False, False]
    # Any other error only blanks its own field.
    assert snap.gpus[2].power_mw is None and snap.gpus[2].temperature_c == 31


def test_mig_devices_have_their_own_uuid_memory_and_processes(monkeypatch):
    snap = load("mig", monkeypatch)
    g0 = snap.gpus[0]
    assert g0.mig_mode == 1 and g0.utilization_gpu_percent is None
    assert [(m.index, m.gpu_instance_id, m.memory_total_bytes // MIB) for m in g0.mig_devices] \
        == [(0, 1, 19968), (1, 5, 9728), (2, 13, 4864)]
    assert all(m.uuid.startswith("MIG-") for m in g0.mig_devices)
    assert g0.mig_devices[0].processes[0].user == "frank"
    assert snap.gpus[1].mig_mode == 0 and snap.gpus[1].mig_devices == ()


def test_compute_and_graphics_lists_merge_per_pid(monkeypatch):
    snap = load("mixed", monkeypatch)
    procs = {p.pid: p for p in snap.gpus[0].processes}
    assert procs[2210].type == "C+G" and procs[2210].user == "henry"
    assert procs[1733].type == "G"
    assert [g.name for g in snap.gpus] == \
        ["NVIDIA GeForce GTX 1080 Ti", "NVIDIA GeForce RTX 4090", "NVIDIA RTX A4000"]


def test_no_driver_is_one_user_error_line(monkeypatch):
    with pytest.raises(nvml.NvmlUnavailable) as info:
        load("nodriver", monkeypatch)
    assert isinstance(info.value, UserError)
    assert str(info.value) == "no NVIDIA driver found on athena (NVML: LibraryNotFound)"
    assert "\n" not in str(info.value)


def test_other_init_errors_say_what_is_wrong():
    assert nvml.describe_init_error("h", "LibRmVersionMismatch") == (
        "NVIDIA driver and library versions differ (reboot or reload) on h "
        "(NVML: LibRmVersionMismatch)")
    assert nvml.describe_init_error("h", "Weird").startswith("cannot query the NVIDIA driver on h")


def test_fake_raises_pynvmls_own_error_classes():
    fake = FakeNvml(json.loads((FIXTURES / "busy4.json").read_text()), nvml.error_class)
    dev = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetFanSpeed(dev)
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(dev, 0)
    assert nvml.error_class("NoSuchName") is pynvml.NVMLError_Unknown


def test_error_names():
    assert nvml.error_name(pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)) == "GpuIsLost"
    assert nvml.error_name(pynvml.NVMLLibraryMismatchError("x")) == "FunctionNotFound"


def test_process_info_of_live_and_vanished_pids():
    me = nvml.psutil_process_info(subprocess.os.getpid())
    assert isinstance(me["user"], str) and me["cmdline"][0].endswith(("python", "python3",
                                                                       Path(sys.executable).name))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert nvml.psutil_process_info(child.pid) == {"error": "NoSuchProcess"}


def test_real_library_without_driver_reports_init_error(monkeypatch):
    """On a machine without a driver, the real pynvml path gives the one-line error."""
    monkeypatch.delenv(nvml.SNAPSHOT_ENV, raising=False)
    raw = nvml.capture_raw()
    if not raw["init_error"]:
        pytest.skip("this machine has a working NVIDIA driver")
    assert raw["devices"] == [] and raw["init_error"] in ("LibraryNotFound", "DriverNotLoaded")
    with pytest.raises(nvml.NvmlUnavailable, match=r"\(NVML: "):
        nvml.query()
