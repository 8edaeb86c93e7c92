"""The fake NVML library that replays a snapshot (LAUNCH_NVML_SNAPSHOT).

A replay goes through launcher/machine/nvml.py's own capture code: `FakeNvml` has the
pynvml function names that code calls and raises pynvml's real `NVMLError_*` classes
(handed in by nvml.py, which alone imports pynvml) for every field recorded as
`{"error": NAME}`. So capturing from a replayed snapshot gives the snapshot back, key for key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any


class FakeNvml:
    """A stand-in for the pynvml module that answers from a snapshot dict."""

    nvmlMemory_v2 = 0x02000028  # same value as pynvml's; only its truth matters here

    def __init__(self, raw: Mapping[str, Any], error_class: Callable[[str], type[Exception]]):
        """raw is a snapshot dict; error_class(NAME) gives pynvml's NVMLError_NAME."""
        self.raw = raw
        self.error_class = error_class
        self.host = raw.get("host") or "?"
        self.devices = raw.get("devices", [])

    def _answer(self, value: Any) -> Any:
        if isinstance(value, dict) and "error" in value:
            raise self.error_class(value["error"])()
        return value

    def _raise_if(self, name: str | None) -> None:
        if name:
            raise self.error_class(name)()

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
        raise self.error_class("NotFound")()

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
