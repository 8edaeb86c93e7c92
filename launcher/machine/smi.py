"""What nvidia-smi's CSV queries say, as the Snapshot records NVML gives (machine/nvml.py).

The fallback of `launch status --hosts` on a host without launch: it asks

    nvidia-smi --query-gpu=QUERY_GPU --format=csv,noheader,nounits
    nvidia-smi --query-compute-apps=QUERY_APPS --format=csv,noheader,nounits

and `ps` for the owners of the PIDs. Each line is one GPU (one process), its fields in the
order asked, separated by ", "; memory in MiB (nounits drops the unit), utilisation in
percent; a field the card cannot give reads "[N/A]" or "[Not Supported]" (nvidia-smi(1),
"--format" and "--query-gpu"). What the CSV does not carry (temperature, power, MIG
devices, bus ids) stays None, as a field NVML cannot give does.
"""

from __future__ import annotations

from collections.abc import Mapping

from launcher.machine.nvml import MIB, UNKNOWN, Gpu, GpuProcess, Snapshot

QUERY_GPU = "index,uuid,name,memory.total,memory.used,memory.free,utilization.gpu"
QUERY_APPS = "gpu_uuid,pid,used_memory,process_name"
SEPARATOR = ", "


def _number(text: str) -> int | None:
    """Return an integer field, or None for [N/A], [Not Supported] and anything not a number."""
    text = text.strip()
    try:
        return int(float(text))
    except ValueError:
        return None


def _text(text: str) -> str | None:
    text = text.strip()
    return None if not text or text.startswith("[") else text


def _mib_bytes(text: str) -> int | None:
    value = _number(text)
    return None if value is None else value * MIB


def parse_apps(csv: str, owners: Mapping[int, str]) -> dict[str, list[GpuProcess]]:
    """Return GPU UUID -> its compute processes, from --query-compute-apps=QUERY_APPS lines."""
    found: dict[str, list[GpuProcess]] = {}
    for line in csv.splitlines():
        fields = line.split(SEPARATOR, 3)  # a process name may hold ", "; it comes last
        if len(fields) < 3:
            continue  # "No running processes found" on old drivers, blank lines
        uuid, pid = fields[0].strip(), _number(fields[1])
        if pid is None:
            continue
        name = _text(fields[3]) if len(fields) > 3 else None
        found.setdefault(uuid, []).append(GpuProcess(pid, _mib_bytes(fields[2]), "C",
                                                     owners.get(pid, UNKNOWN), name or UNKNOWN))
    return found


def parse_owners(ps_output: str) -> dict[int, str]:
    """Return PID -> user name from `ps -o pid=,user=` lines."""
    owners = {}
    for line in ps_output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            owners[int(parts[0])] = parts[1]
    return owners


def parse_smi(gpus_csv: str, apps_csv: str, owners: Mapping[int, str], host: str) -> Snapshot:
    """Return the Snapshot that nvidia-smi's --query-gpu and --query-compute-apps lines describe.

    Raises ValueError naming the line when a GPU line is not QUERY_GPU's seven fields (an
    error message of nvidia-smi's, or another query).
    """
    apps = parse_apps(apps_csv, owners)
    gpus = []
    for line in gpus_csv.splitlines():
        if not line.strip():
            continue
        fields = line.split(SEPARATOR)
        index = _number(fields[0]) if fields else None
        if len(fields) != 7 or index is None:
            raise ValueError(f"not an nvidia-smi --query-gpu line: {line.strip()[:120]}")
        uuid = _text(fields[1])
        gpus.append(Gpu(index=index, name=_text(fields[2]), uuid=uuid, pci_bus_id=None,
                        memory_total_bytes=_mib_bytes(fields[3]), memory_reserved_bytes=None,
                        memory_used_bytes=_mib_bytes(fields[4]),
                        memory_free_bytes=_mib_bytes(fields[5]),
                        utilization_gpu_percent=_number(fields[6]),
                        utilization_memory_percent=None, temperature_c=None, fan_percent=None,
                        power_mw=None, power_limit_mw=None, mig_mode=None, mig_devices=(),
                        processes=tuple(sorted(apps.get(uuid or "", ()),
                                               key=lambda p: p.pid))))
    return Snapshot(host=host, driver_version=None, cuda_driver_version=None, gpus=tuple(gpus))
