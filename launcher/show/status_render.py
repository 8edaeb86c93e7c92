"""What `launch status` prints: the gpustat-style lines, the nvidia-smi style tables, JSON.

The renderers are pure functions of a Snapshot, the leases held and the sweeps' views, so
golden files pin their output; `launcher.status` gathers those and prints.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from launcher.machine.cpus import CpuUse
from launcher.machine.gpunames import named
from launcher.machine.leases import GpuLease
from launcher.machine.nvml import MIB, Gpu, Snapshot
from launcher.show.sweep_table import render_sweeps, short_id
from launcher.show.views import SweepView

RESERVED = "reserved by the house rules"  # a GPU line's word for a GPU this user may not take
STATUS_FORMAT = "launch-status/1"  # what `launch status --json` says it is (docs/design.md)


def _mib(n_bytes: int | None) -> str:
    return "?" if n_bytes is None else str(n_bytes // MIB)


def _na(value: Any, unit: str = "") -> str:
    return "N/A" if value is None else f"{value}{unit}"


def _cuda(version: int | None) -> str:
    return "N/A" if version is None else f"{version // 1000}.{version % 1000 // 10}"


def _held_on(uuids: Sequence[str | None], leases: Sequence[GpuLease]) -> list[GpuLease]:
    # A lease without metadata knows its UUID only from the file name, "/" made "_".
    names = {u for u in uuids if u} | {u.replace("/", "_") for u in uuids if u}
    return [lease for lease in leases if lease.uuid in names]


def _leases_on(gpu: Gpu, leases: Sequence[GpuLease]) -> list[GpuLease]:
    return _held_on([gpu.uuid, *(m.uuid for m in gpu.mig_devices)], leases)


def _lease_text(held: Sequence[GpuLease]) -> str:
    return ", ".join(f"{h.user}:{h.sweep or '?'}/{h.job or '?'}" for h in held)


def _procs_text(gpu_procs: Sequence) -> str:
    return " ".join(f"{p.user}({_mib(p.memory_used_bytes)}M)" for p in gpu_procs)


def _gpu_line(gpu: Gpu, name_w: int, leases: Sequence[GpuLease],
              reserved: Sequence[str] = ()) -> list[str]:
    if gpu.lost:
        return [f"[{gpu.index}] {(gpu.name or '?'):<{name_w}} | lost (NVML: {gpu.error})"]
    temp = f"{_na(gpu.temperature_c, '°C'):>5}"
    util = f"{_na(gpu.utilization_gpu_percent):>3} %"
    mem = f"{_mib(gpu.memory_used_bytes):>5} / {_mib(gpu.memory_total_bytes):>5} MiB"
    parts = [f"[{gpu.index}] {(gpu.name or '?'):<{name_w}}", f"{temp}, {util}", mem]
    if gpu.mig_mode == 1:
        parts.append(f"MIG: {len(gpu.mig_devices)} devices")
    elif gpu.processes:
        parts.append(_procs_text(gpu.processes))
    held = _leases_on(gpu, leases) if gpu.mig_mode != 1 else []
    if held:
        parts.append("lease " + _lease_text(held))
    if str(gpu.index) in reserved:
        parts.append(RESERVED)
    lines = [" | ".join(parts)]
    for m in gpu.mig_devices if gpu.mig_mode == 1 else ():
        profile = (m.name or "?").removeprefix(gpu.name or "").strip()
        mig_parts = [f"    {gpu.index}:{m.index} {profile:<{name_w - 4}}",
                     f"{_mib(m.memory_used_bytes):>5} / {_mib(m.memory_total_bytes):>5} MiB"]
        if m.processes:
            mig_parts.append(_procs_text(m.processes))
        held = _held_on([m.uuid], leases)
        if held:
            mig_parts.append("lease " + _lease_text(held))
        if f"{gpu.index}:{m.index}" in reserved:
            mig_parts.append(RESERVED)
        lines.append(" | ".join(mig_parts))
    return lines


def _header(snapshot: Snapshot | None, host: str, now: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    if snapshot is None:
        return f"{host}  {when}"
    return (f"{snapshot.host}  {when}  driver {_na(snapshot.driver_version)}  "
            f"CUDA {_cuda(snapshot.cuda_driver_version)}")


def reserved_in(house_rules: Any) -> tuple[str, ...]:
    """Return the GPUs the house rules keep from the user, from status's `house_rules` JSON
    (this box's, or another host's answer, which may hold anything)."""
    in_force = house_rules.get("in_force") if isinstance(house_rules, dict) else None
    found = in_force.get("reserved_gpus") if isinstance(in_force, dict) else None
    return tuple(str(g) for g in found) if isinstance(found, list) else ()


def gpu_lines(snapshot: Snapshot | None, leases: Sequence[GpuLease], now: float,
              nvml_error: str | None = None, host: str = "?",
              reserved: Sequence[str] = ()) -> list[str]:
    """Return the header and one line per GPU (or why there are none) of the gpustat-like view.

    reserved names the GPUs the house rules keep from this user (indices, MIG labels or
    UUIDs, as the rules file writes them); their lines say so.
    """
    lines = [_header(snapshot, host, now)]
    if snapshot is None:
        return lines + ([f"launch: {nvml_error}"] if nvml_error else [])
    name_w = max([len(g.name or "?") for g in snapshot.gpus] + [0])
    labels = {str(g.index) for g in snapshot.gpus
              if g.mig_mode != 1 and named(str(g.index), g.index, g.uuid, reserved)}
    labels |= {f"{g.index}:{m.index}" for g in snapshot.gpus for m in g.mig_devices
               if named(f"{g.index}:{m.index}", g.index, m.uuid, reserved)}
    for gpu in snapshot.gpus:
        lines += _gpu_line(gpu, name_w, leases, labels)
    if not snapshot.gpus:
        lines.append("no GPUs")
    return lines


def render_status(snapshot: Snapshot | None, leases: Sequence[GpuLease],
                  sweeps: Sequence[SweepView], now: float, nvml_error: str | None = None,
                  host: str = "?", one_sweep: bool = False, cpu_use: CpuUse | None = None,
                  note: str | None = None, reserved: Sequence[str] = ()) -> str:
    """Return the gpustat-like view: header, one line per GPU, then the sweeps and jobs."""
    lines = gpu_lines(snapshot, leases, now, nvml_error, host, reserved)
    if cpu_use is not None:
        lines.append(cpu_use.describe())
    if note:
        lines.append(note)
    lines += ["", *render_sweeps(sweeps, snapshot, one_sweep)]
    return "\n".join(lines) + "\n"


_W = (41, 24, 22)  # cell widths of nvidia-smi's GPU block
_INNER = sum(_W) + len(_W) - 1


def _cells(*texts: str) -> str:
    return "|" + "|".join(f" {t:<{w - 2}.{w - 2}} " for t, w in zip(texts, _W, strict=True)) + "|"


def _rule(fill: str = "-", split: bool = True) -> str:
    end = "|" if fill == "=" else "+"
    return end + ("+".join(fill * w for w in _W) if split else fill * _INNER) + end


def _wide(text: str) -> str:
    return f"| {text:<{_INNER - 2}.{_INNER - 2}} |"


def _holder(held: GpuLease, width: int) -> str:
    return f"{held.user} {short_id(held.job or '?', width - len(held.user) - 1)}"


def _gpu_rows(gpu: Gpu, leases: Sequence[GpuLease]) -> list[str]:
    if gpu.lost:
        return [_cells(f"{gpu.index:>3}  {gpu.name or '?'}", gpu.pci_bus_id or "?",
                       "ERR!"), _cells("", "", f"lost ({gpu.error})")]
    util = "MIG" if gpu.mig_mode == 1 else f"{_na(gpu.utilization_gpu_percent, '%')}"
    power = (f"{_na(gpu.power_mw and gpu.power_mw // 1000, 'W')} / "
             f"{_na(gpu.power_limit_mw and gpu.power_limit_mw // 1000, 'W')}")
    mem = f"{_mib(gpu.memory_used_bytes)}MiB / {_mib(gpu.memory_total_bytes)}MiB"
    held = _leases_on(gpu, leases)
    lease = ", ".join(_holder(h, _W[2] - 2) for h in held) or "-"
    return [_cells(f"{gpu.index:>3}  {gpu.name or '?'}", gpu.pci_bus_id or "?",
                   f"{util:>8}   {_na(gpu.utilization_memory_percent, '%'):>8}"),
            _cells(f"{_na(gpu.fan_percent, '%'):>4} {_na(gpu.temperature_c, 'C'):>5}   {power}",
                   f"{mem:>22}", lease)]


def _mig_rows(snapshot: Snapshot, leases: Sequence[GpuLease]) -> list[str]:
    rows = []
    for gpu in snapshot.gpus:
        for m in gpu.mig_devices if gpu.mig_mode == 1 else ():
            profile = (m.name or "?").removeprefix(gpu.name or "").strip().removeprefix("MIG ")
            mem = f"{_mib(m.memory_used_bytes)}MiB / {_mib(m.memory_total_bytes)}MiB"
            who = _procs_text(m.processes) or ", ".join(
                _holder(h, 34) for h in _held_on([m.uuid], leases))
            rows.append(_wide(f"{gpu.index:>3} {_na(m.gpu_instance_id):>3} "
                              f"{_na(m.compute_instance_id):>3} {m.index:>4}  {profile:<10} "
                              f"{mem:>20}   {who}"))
    if not rows:
        return []
    return ["", _rule(split=False), _wide("MIG devices:"),
            _wide(f"{'GPU':>3} {'GI':>3} {'CI':>3} {'MIG':>4}  {'Profile':<10} "
                  f"{'Memory-Usage':>20}   Processes"), _rule("=", split=False), *rows,
            _rule(split=False)]


def _process_rows(snapshot: Snapshot) -> list[str]:
    rows = []
    for gpu in snapshot.gpus:
        places = [(str(gpu.index), gpu.processes)]
        places += [(f"{gpu.index}:{m.index}", m.processes) for m in gpu.mig_devices]
        for label, procs in places:
            rows += [_wide(f"{label:>5}  {p.pid:>9}  {p.type:>4}  {p.user:<8.8}  {p.command:<41.41}"
                           f"  {_mib(p.memory_used_bytes) + 'MiB':>10}") for p in procs]
    return rows or [_wide("  No running processes found")]


def gpu_tables(snapshot: Snapshot, leases: Sequence[GpuLease], now: float) -> list[str]:
    """Return the nvidia-smi style GPU block, MIG block and Processes block, as lines."""
    when = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(now))
    lines = [_rule(split=False),
             _wide(f"{snapshot.host}   {when}   Driver Version: {_na(snapshot.driver_version)}"
                   f"   CUDA Version: {_cuda(snapshot.cuda_driver_version)}"),
             _rule(),
             _cells("GPU  Name", "Bus-Id", "GPU-Util   Mem-Util"),
             _cells(" Fan  Temp   Pwr:Usage/Cap", f"{'Memory-Usage':>22}", "Lease"),
             _rule("=")]
    for gpu in snapshot.gpus:
        lines += [*_gpu_rows(gpu, leases), _rule()]
    if not snapshot.gpus:
        lines += [_wide("No GPUs found"), _rule(split=False)]
    lines += _mig_rows(snapshot, leases)
    lines += ["", _rule(split=False), _wide("Processes:"),
              _wide(f"{'GPU':>5}  {'PID':>9}  {'Type':>4}  {'User':<8}  {'Process name':<41}"
                    f"  {'GPU Memory':>10}"),
              _rule("=", split=False), *_process_rows(snapshot), _rule(split=False)]
    return lines


def render_full(snapshot: Snapshot | None, leases: Sequence[GpuLease],
                sweeps: Sequence[SweepView], now: float, nvml_error: str | None = None,
                host: str = "?", one_sweep: bool = False, cpu_use: CpuUse | None = None,
                note: str | None = None) -> str:
    """Return the nvidia-smi style tables (GPUs, MIG devices, processes), then the sweeps."""
    if snapshot is None:
        lines = [_header(None, host, now)]
        lines += [f"launch: {nvml_error}",
                  "(no GPU or process tables: they come from the NVIDIA driver)"] \
            if nvml_error else []
    else:
        lines = gpu_tables(snapshot, leases, now)
    if cpu_use is not None:
        lines.append(cpu_use.describe())
    if note:
        lines.append(note)
    lines += ["", *render_sweeps(sweeps, snapshot, one_sweep)]
    return "\n".join(lines) + "\n"


def plain(value: Any) -> Any:
    """Return a record (NamedTuple) and whatever it holds as JSON-ready dicts and lists."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def status_json(snapshot: Snapshot | None, leases: Sequence[GpuLease],
                sweeps: Sequence[SweepView], now: float, nvml_error: str | None = None,
                host: str = "?", cpu_use: CpuUse | None = None,
                leases_protected: bool | None = None,
                user: str | None = None) -> dict[str, Any]:
    """Return everything status knows as JSON-ready data with stable keys.

    `format` (STATUS_FORMAT) changes only when a reader of the old keys would misread the
    new ones; keys are added without a change (docs/design.md: The status JSON).
    """
    gpus = []
    for gpu in snapshot.gpus if snapshot else ():
        item = plain(gpu)
        item["leases"] = [plain(h) for h in _leases_on(gpu, leases)]
        gpus.append(item)
    return {
        "format": STATUS_FORMAT,
        "host": snapshot.host if snapshot else host,
        "time": now,
        "nvml_error": nvml_error,
        "driver_version": snapshot.driver_version if snapshot else None,
        "cuda_driver_version": snapshot.cuda_driver_version if snapshot else None,
        "gpus": gpus,
        "cpus": {"usable": cpu_use.usable, "held": cpu_use.held,
                 "by_user": dict(cpu_use.by_user)} if cpu_use else None,
        "leases_protected": leases_protected,
        "sweeps": [{"sweep_id": v.sweep_id, "name": v.name, "executor": v.executor,
                    "created": v.created, "user": v.user, "host": v.host,
                    "supervisor": v.supervisor, "error": v.error, "counts": v.counts(),
                    "jobs": [plain(j) for j in v.jobs]} for v in sweeps],
        "user": user,  # whose sweeps these are, and whose processes are not "other users'"
    }
