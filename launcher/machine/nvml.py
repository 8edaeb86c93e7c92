"""The only door to NVML: query GPUs into immutable records, field by field.

`capture_raw()` asks NVML (or, with LAUNCH_NVML_SNAPSHOT set, a replayed
snapshot that answers to the same function names) and psutil, and returns the
snapshot format of docs/design.md. `query()` parses that into a `Snapshot`. Both a
real machine and a replay run the very same capture code, so a fixture
exercises what production runs.

The records here, and the lease, CPU and run-directory records that `launch status` reads,
are NamedTuples rather than frozen dataclasses: importing `dataclasses`
(it pulls in `inspect`, `ast` and `dis`) and building the classes cost status a third of
its time budget (bench/status_latency.py). Config stays frozen dataclasses.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from launcher.errors import UserError
from launcher.machine import foreign

FORMAT = "launch-nvml-snapshot/1"
MIB = 1024 * 1024  # NVML counts memory in bytes; policies and tables speak MiB
GIB = 1024 * MIB
SNAPSHOT_ENV = "LAUNCH_NVML_SNAPSHOT"
UNKNOWN = "?"  # owner or command of a PID we cannot see (vanished, other namespace)

_initialized = False


def gib(n_bytes: int | None) -> str:
    """Return a size in GiB with one decimal, as wait lines and oom lines say it: "9.1 GiB"."""
    return "?" if n_bytes is None else f"{n_bytes / GIB:.1f} GiB"


class NvmlUnavailable(UserError):
    """NVML cannot be used on this machine (no driver, mismatch, no permission)."""

    def __init__(self, host: str, error_name: str):
        self.host = host
        self.error_name = error_name
        super().__init__(describe_init_error(host, error_name))


def describe_init_error(host: str, error_name: str) -> str:
    """Return the one-line message a user sees when NVML cannot start."""
    what = {
        "LibraryNotFound": "no NVIDIA driver found",
        "DriverNotLoaded": "NVIDIA driver not loaded",
        "LibRmVersionMismatch": "NVIDIA driver and library versions differ (reboot or reload)",
        "NoPermission": "no permission to query the NVIDIA driver",
    }.get(error_name, "cannot query the NVIDIA driver")
    return f"{what} on {host} (NVML: {error_name})"


class GpuProcess(NamedTuple):
    """A process using a GPU (or a MIG device), with its owner as psutil saw it."""

    pid: int
    memory_used_bytes: int | None
    type: str  # "C" compute, "G" graphics, "C+G" both
    user: str  # UNKNOWN when the PID does not resolve here
    command: str


class MigDevice(NamedTuple):
    """One MIG device of a MIG-enabled GPU; jobs address it by its own UUID."""

    index: int
    name: str | None
    uuid: str | None
    gpu_instance_id: int | None
    compute_instance_id: int | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    processes: tuple[GpuProcess, ...]


class Gpu(NamedTuple):
    """One physical GPU; a field NVML cannot give on this card is None."""

    index: int
    name: str | None
    uuid: str | None
    pci_bus_id: str | None
    memory_total_bytes: int | None
    memory_reserved_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    utilization_gpu_percent: int | None
    utilization_memory_percent: int | None
    temperature_c: int | None
    fan_percent: int | None
    power_mw: int | None
    power_limit_mw: int | None
    mig_mode: int | None
    mig_devices: tuple[MigDevice, ...]
    processes: tuple[GpuProcess, ...]
    lost: bool = False
    error: str | None = None  # the NVML error that made this row lost


class Snapshot(NamedTuple):
    """What NVML said about this machine at one moment."""

    host: str
    driver_version: str | None
    cuda_driver_version: int | None
    gpus: tuple[Gpu, ...]


def pynvml_module() -> Any:
    """Return the imported pynvml module (nvidia-ml-py); imported on first use only."""
    import pynvml

    return pynvml


def error_class(name: str) -> type[Exception]:
    """Return pynvml's exception class for an error name such as "NotSupported"."""
    lib = pynvml_module()
    return getattr(lib, "NVMLError_" + name, lib.NVMLError_Unknown)


def error_name(exc: BaseException) -> str:
    """Return the short NVML name of an exception, e.g. "GpuIsLost"."""
    name = type(exc).__name__
    if name == "NVMLLibraryMismatchError":
        return "FunctionNotFound"  # pynvml's wrapper for a missing unversioned symbol
    return name.removeprefix("NVMLError_") if name.startswith("NVMLError_") else "Unknown"


def _nvml_errors() -> tuple[type[Exception], ...]:
    lib = pynvml_module()
    return (lib.NVMLError, lib.NVMLLibraryMismatchError)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Failed(dict):
    """An NVML error as recorded: {"error": NAME}; a type of its own, as handles may be dicts."""


class _Reader:
    """Calls NVML functions one at a time, recording each answer or error name."""

    def __init__(self, lib: Any):
        self.lib = lib
        self.errors = _nvml_errors()

    def field(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self.errors as exc:
            return _Failed(error=error_name(exc))


def _memory(read: _Reader, handle: Any) -> dict[str, Any]:
    lib = read.lib
    out: dict[str, Any] = {}
    try:
        m = lib.nvmlDeviceGetMemoryInfo(handle, version=lib.nvmlMemory_v2)
        out["memory"] = {"total": m.total, "reserved": m.reserved, "used": m.used, "free": m.free}
        return out
    except read.errors as exc:
        # Old drivers lack the v2 call; v1 counts reserved memory as used.
        out["memory_v2_error"] = error_name(exc)
    out["memory"] = read.field(lambda: _memory_v1(lib.nvmlDeviceGetMemoryInfo(handle)))
    return out


def _memory_v1(m: Any) -> dict[str, int]:
    return {"total": m.total, "used": m.used, "free": m.free}


def _processes(read: _Reader, handle: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"processes": []}
    calls = (("C", "nvmlDeviceGetComputeRunningProcesses", "compute_processes_error"),
             ("G", "nvmlDeviceGetGraphicsRunningProcesses", "graphics_processes_error"))
    for kind, fn_name, error_key in calls:
        found = read.field(lambda fn_name=fn_name: getattr(read.lib, fn_name)(handle))
        if isinstance(found, _Failed):
            out[error_key] = found["error"]
            continue
        out["processes"] += [{"pid": p.pid, "used_memory": p.usedGpuMemory, "type": kind}
                             for p in found]
    return out


def _mig_devices(read: _Reader, handle: Any) -> dict[str, Any]:
    lib = read.lib
    count = read.field(lambda: lib.nvmlDeviceGetMaxMigDeviceCount(handle))
    out: dict[str, Any] = {"mig_max_devices": count, "mig_devices": []}
    if isinstance(count, _Failed):
        return out
    for i in range(count):
        mig = read.field(lambda i=i: lib.nvmlDeviceGetMigDeviceHandleByIndex(handle, i))
        if isinstance(mig, _Failed):
            continue  # NotFound: an empty slot, the common case
        dev = {"index": i,
               "name": read.field(lambda mig=mig: _text(lib.nvmlDeviceGetName(mig))),
               "uuid": read.field(lambda mig=mig: _text(lib.nvmlDeviceGetUUID(mig))),
               "gpu_instance_id": read.field(lambda mig=mig: lib.nvmlDeviceGetGpuInstanceId(mig)),
               "compute_instance_id":
                   read.field(lambda mig=mig: lib.nvmlDeviceGetComputeInstanceId(mig))}
        dev.update(_memory(read, mig))
        dev.update(_processes(read, mig))
        out["mig_devices"].append(dev)
    return out


def _device(read: _Reader, index: int) -> dict[str, Any]:
    lib = read.lib
    handle = read.field(lambda: lib.nvmlDeviceGetHandleByIndex(index))
    if isinstance(handle, _Failed):
        return {"index": index, "error": handle["error"]}
    dev: dict[str, Any] = {
        "index": index,
        "name": read.field(lambda: _text(lib.nvmlDeviceGetName(handle))),
        "uuid": read.field(lambda: _text(lib.nvmlDeviceGetUUID(handle))),
        "pci_bus_id": read.field(lambda: _text(lib.nvmlDeviceGetPciInfo(handle).busId)),
    }
    dev.update(_memory(read, handle))
    util = read.field(lambda: lib.nvmlDeviceGetUtilizationRates(handle))
    dev["utilization"] = util if isinstance(util, _Failed) else \
        {"gpu": util.gpu, "memory": util.memory}
    dev["temperature_c"] = read.field(lambda: lib.nvmlDeviceGetTemperature(handle, 0))
    dev["fan_percent"] = read.field(lambda: lib.nvmlDeviceGetFanSpeed(handle))
    dev["power_mw"] = read.field(lambda: lib.nvmlDeviceGetPowerUsage(handle))
    dev["power_limit_mw"] = read.field(lambda: lib.nvmlDeviceGetEnforcedPowerLimit(handle))
    dev["mig_mode"] = read.field(lambda: lib.nvmlDeviceGetMigMode(handle)[0])
    if dev["mig_mode"] == 1:
        dev.update(_mig_devices(read, handle))
    else:
        dev["mig_devices"] = []
    dev.update(_processes(read, handle))
    return dev


def _skeleton(host: str, init_error: str | None = None) -> dict[str, Any]:
    return {"format": FORMAT, "host": host, "driver_version": None, "cuda_driver_version": None,
            "init_error": init_error, "devices": [], "processes": {}}


def capture_with(lib: Any, process_info: Callable[[int], dict], host: str) -> dict[str, Any]:
    """Return the snapshot dict (docs/design.md: Snapshots) read from `lib` and `process_info`."""
    global _initialized
    read = _Reader(lib)
    snap = _skeleton(host)
    real = lib is pynvml_module()
    if not (real and _initialized):  # the real library is initialised once per process
        init = read.field(lib.nvmlInit)
        if isinstance(init, _Failed):
            snap["init_error"] = init["error"]
            return snap
        _initialized = _initialized or real
    snap["driver_version"] = read.field(lambda: _text(lib.nvmlSystemGetDriverVersion()))
    snap["cuda_driver_version"] = read.field(lib.nvmlSystemGetCudaDriverVersion)
    count = read.field(lib.nvmlDeviceGetCount)
    if isinstance(count, _Failed):
        snap["device_count_error"] = count["error"]
        count = 0
    snap["devices"] = [_device(read, i) for i in range(count)]
    pids = sorted({p["pid"] for dev in snap["devices"] for p in _all_processes(dev)})
    snap["processes"] = {str(pid): process_info(pid) for pid in pids}
    return snap


def _all_processes(dev: Mapping[str, Any]) -> list[dict]:
    found = list(dev.get("processes", []))
    for mig in dev.get("mig_devices", []):
        found += mig.get("processes", [])
    return found


def psutil_process_info(pid: int) -> dict[str, Any]:
    """Return {"user", "cmdline"} of a PID; errors recorded, never raised."""
    import psutil

    try:
        proc = psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
        return {"error": type(exc).__name__}  # gone, or a PID of another namespace
    info: dict[str, Any] = {}
    for key, fn in (("user", proc.username), ("cmdline", proc.cmdline)):
        try:
            info[key] = fn()
        except (psutil.Error, KeyError) as exc:  # KeyError: uid without a passwd entry
            info[key] = {"error": type(exc).__name__}
    return info


def capture_raw() -> dict[str, Any]:
    """Return the snapshot dict of this machine, or of LAUNCH_NVML_SNAPSHOT when set."""
    path = os.environ.get(SNAPSHOT_ENV)
    if path:
        from launcher.machine.replay import FakeNvml

        fake = FakeNvml(read_snapshot_file(path), error_class)
        return capture_with(fake, fake.process_info, fake.host)
    try:
        lib = pynvml_module()
    except ImportError:  # a broken install reads like a machine without NVML
        return _skeleton(socket.gethostname(), "LibraryNotFound")
    return capture_with(lib, psutil_process_info, socket.gethostname())


def read_snapshot_file(path: str) -> dict[str, Any]:
    """Return the snapshot dict in a file; UserError naming the file if it holds none."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError(f"{SNAPSHOT_ENV}={path}: cannot read snapshot: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UserError(f"{SNAPSHOT_ENV}={path}: not a {FORMAT} file")
    return raw


def query() -> Snapshot:
    """Return the GPUs of this machine (or the replayed snapshot); raises NvmlUnavailable."""
    return parse(capture_raw())


def parse(raw: Mapping[str, Any]) -> Snapshot:
    """Return the Snapshot a snapshot dict describes; raises NvmlUnavailable on init_error."""
    if raw.get("init_error"):
        raise NvmlUnavailable(raw.get("host") or socket.gethostname(), raw["init_error"])
    owners = raw.get("processes", {})
    gpus = tuple(_parse_gpu(dev, owners) for dev in raw.get("devices", []))
    return Snapshot(host=raw.get("host") or "?", driver_version=_ok(raw.get("driver_version")),
                    cuda_driver_version=_ok(raw.get("cuda_driver_version")), gpus=gpus)


def _ok(value: Any) -> Any:
    """Return a recorded field's value, or None where NVML answered with an error."""
    return None if isinstance(value, dict) and "error" in value else value


def _mem(dev: Mapping[str, Any], key: str) -> int | None:
    memory = _ok(dev.get("memory")) or {}
    return memory.get(key)


def _parse_processes(entries: list[Mapping], owners: Mapping[str, Any]) -> tuple[GpuProcess, ...]:
    merged: dict[int, dict[str, Any]] = {}
    for p in entries:
        seen = merged.setdefault(p["pid"], {"types": [], "mem": None})
        if p["type"] not in seen["types"]:
            seen["types"].append(p["type"])
        if p.get("used_memory") is not None:
            seen["mem"] = max(seen["mem"] or 0, p["used_memory"])
    out = []
    for pid, seen in sorted(merged.items()):
        owner = owners.get(str(pid)) or {}
        # Another user's process may name itself with escape codes: shown, never obeyed.
        user = foreign.text(_ok(owner.get("user")), UNKNOWN)
        cmdline = _ok(owner.get("cmdline"))
        command = foreign.text(" ".join(map(str, cmdline)), UNKNOWN, limit=400) if \
            isinstance(cmdline, list) and cmdline else UNKNOWN
        kind = "+".join(sorted(seen["types"]))
        out.append(GpuProcess(pid, seen["mem"], kind, user, command))
    return tuple(out)


def _parse_gpu(dev: Mapping[str, Any], owners: Mapping[str, Any]) -> Gpu:
    fields = [dev.get(k) for k in ("name", "uuid", "pci_bus_id", "memory", "utilization",
                                   "temperature_c", "fan_percent", "power_mw")]
    lost = "error" in dev or any(isinstance(f, dict) and f.get("error") == "GpuIsLost"
                                 for f in fields)
    util = _ok(dev.get("utilization")) or {}
    migs = tuple(MigDevice(index=m["index"], name=_ok(m.get("name")), uuid=_ok(m.get("uuid")),
                           gpu_instance_id=_ok(m.get("gpu_instance_id")),
                           compute_instance_id=_ok(m.get("compute_instance_id")),
                           memory_total_bytes=_mem(m, "total"), memory_used_bytes=_mem(m, "used"),
                           memory_free_bytes=_mem(m, "free"),
                           processes=_parse_processes(m.get("processes", []), owners))
                 for m in dev.get("mig_devices", []))
    return Gpu(index=dev["index"], name=_ok(dev.get("name")), uuid=_ok(dev.get("uuid")),
               pci_bus_id=_ok(dev.get("pci_bus_id")),
               memory_total_bytes=_mem(dev, "total"), memory_reserved_bytes=_mem(dev, "reserved"),
               memory_used_bytes=_mem(dev, "used"), memory_free_bytes=_mem(dev, "free"),
               utilization_gpu_percent=util.get("gpu"),
               utilization_memory_percent=util.get("memory"),
               temperature_c=_ok(dev.get("temperature_c")), fan_percent=_ok(dev.get("fan_percent")),
               power_mw=_ok(dev.get("power_mw")), power_limit_mw=_ok(dev.get("power_limit_mw")),
               mig_mode=_ok(dev.get("mig_mode")), mig_devices=migs,
               processes=_parse_processes(dev.get("processes", []), owners),
               lost=lost, error=dev.get("error") or ("GpuIsLost" if lost else None))
