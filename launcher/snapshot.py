"""NVML snapshots: `launch snapshot`, and the fake library that replays one.

A replay goes through `launcher.nvml`'s own capture code: `FakeNvml` has the
pynvml function names that code calls and raises pynvml's real
`NVMLError_*` classes for every field recorded as `{"error": NAME}`. So
capturing from a replayed snapshot gives the snapshot back, key for key.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from launcher import nvml
from launcher.errors import UserError


class FakeNvml:
    """A stand-in for the pynvml module that answers from a snapshot dict."""

    nvmlMemory_v2 = 0x02000028  # same value as pynvml's; only its truth matters here

    def __init__(self, raw: Mapping[str, Any]):
        self.raw = raw
        self.host = raw.get("host") or "?"
        self.devices = raw.get("devices", [])

    @classmethod
    def from_file(cls, path: str) -> FakeNvml:
        """Return a fake library for a snapshot file; raises UserError if unreadable."""
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError) as exc:
            raise UserError(f"{nvml.SNAPSHOT_ENV}={path}: cannot read snapshot: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != nvml.FORMAT:
            raise UserError(f"{nvml.SNAPSHOT_ENV}={path}: not a {nvml.FORMAT} file")
        return cls(raw)

    @staticmethod
    def _answer(value: Any) -> Any:
        if isinstance(value, dict) and "error" in value:
            raise nvml.error_class(value["error"])()
        return value

    def _raise_if(self, name: str | None) -> None:
        if name:
            raise nvml.error_class(name)()

    def process_info(self, pid: int) -> dict[str, Any]:
        """Return what psutil said about a PID when the snapshot was taken."""
        return self.raw.get("processes", {}).get(str(pid), {"error": "NoSuchProcess"})

    def nvmlInit(self) -> None:
        self._raise_if(self.raw.get("init_error"))

    def nvmlShutdown(self) -> None:
        return None

    def nvmlSystemGetDriverVersion(self) -> str:
        return self._answer(self.raw.get("driver_version"))

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self._answer(self.raw.get("cuda_driver_version"))

    def nvmlDeviceGetCount(self) -> int:
        self._raise_if(self.raw.get("device_count_error"))
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Mapping[str, Any]:
        dev = self.devices[index]
        self._raise_if(dev.get("error"))
        return dev

    def nvmlDeviceGetName(self, dev: Mapping) -> str:
        return self._answer(dev.get("name"))

    def nvmlDeviceGetUUID(self, dev: Mapping) -> str:
        return self._answer(dev.get("uuid"))

    def nvmlDeviceGetPciInfo(self, dev: Mapping) -> SimpleNamespace:
        return SimpleNamespace(busId=self._answer(dev.get("pci_bus_id")).encode())

    def nvmlDeviceGetMemoryInfo(self, dev: Mapping, version: int | None = None) -> SimpleNamespace:
        if version:
            self._raise_if(dev.get("memory_v2_error"))
        return SimpleNamespace(**self._answer(dev.get("memory")))

    def nvmlDeviceGetUtilizationRates(self, dev: Mapping) -> SimpleNamespace:
        return SimpleNamespace(**self._answer(dev.get("utilization")))

    def nvmlDeviceGetTemperature(self, dev: Mapping, sensor: int) -> int:
        return self._answer(dev.get("temperature_c"))

    def nvmlDeviceGetFanSpeed(self, dev: Mapping) -> int:
        return self._answer(dev.get("fan_percent"))

    def nvmlDeviceGetPowerUsage(self, dev: Mapping) -> int:
        return self._answer(dev.get("power_mw"))

    def nvmlDeviceGetEnforcedPowerLimit(self, dev: Mapping) -> int:
        return self._answer(dev.get("power_limit_mw"))

    def nvmlDeviceGetMigMode(self, dev: Mapping) -> list[int]:
        mode = self._answer(dev.get("mig_mode"))
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, dev: Mapping) -> int:
        return self._answer(dev.get("mig_max_devices", {"error": "NotSupported"}))

    def nvmlDeviceGetMigDeviceHandleByIndex(self, dev: Mapping, index: int) -> Mapping:
        for mig in dev.get("mig_devices", []):
            if mig["index"] == index:
                return mig
        raise nvml.error_class("NotFound")()

    def nvmlDeviceGetGpuInstanceId(self, mig: Mapping) -> int:
        return self._answer(mig.get("gpu_instance_id"))

    def nvmlDeviceGetComputeInstanceId(self, mig: Mapping) -> int:
        return self._answer(mig.get("compute_instance_id"))

    def _processes(self, dev: Mapping, kind: str, error_key: str) -> list[SimpleNamespace]:
        self._raise_if(dev.get(error_key))
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p["used_memory"])
                for p in dev.get("processes", []) if p["type"] == kind]

    def nvmlDeviceGetComputeRunningProcesses(self, dev: Mapping) -> list[SimpleNamespace]:
        return self._processes(dev, "C", "compute_processes_error")

    def nvmlDeviceGetGraphicsRunningProcesses(self, dev: Mapping) -> list[SimpleNamespace]:
        return self._processes(dev, "G", "graphics_processes_error")


def dumps(raw: Mapping[str, Any]) -> str:
    """Return a snapshot dict as the JSON text `launch snapshot` prints."""
    return json.dumps(raw, indent=1) + "\n"


def _fake_uuid(uuid: str) -> str:
    import hashlib

    prefix, _, _ = uuid.partition("-")
    h = hashlib.sha256(uuid.encode()).hexdigest()
    return f"{prefix}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def anonymized(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy without host name, user names, arguments or real UUIDs."""
    out = json.loads(json.dumps(raw))
    out["host"] = "host"
    users: dict[str, str] = {"root": "root"}
    for info in out.get("processes", {}).values():
        if isinstance(info.get("user"), str):
            info["user"] = users.setdefault(info["user"], f"user{len(users)}")
        if isinstance(info.get("cmdline"), list):
            # Arguments can hold paths and secrets; the program name is enough to read.
            info["cmdline"] = [os.path.basename(a) for a in info["cmdline"][:1]]
    for dev in out.get("devices", []):
        for item in [dev, *dev.get("mig_devices", [])]:
            if isinstance(item.get("uuid"), str):
                item["uuid"] = _fake_uuid(item["uuid"])
    return out


def run_snapshot(anonymize: bool = False) -> int:
    """Print this machine's snapshot as JSON to stdout; return the exit status (0)."""
    raw = nvml.capture_raw()
    if raw.get("init_error"):
        # Still a valid snapshot: it reproduces a machine without a driver.
        print("launch: " + nvml.describe_init_error(raw["host"], raw["init_error"]),
              file=sys.stderr)
    sys.stdout.write(dumps(anonymized(raw) if anonymize else raw))
    return 0
