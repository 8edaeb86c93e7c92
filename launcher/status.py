"""`launch status`: the GPUs, who uses them, and where this user's sweeps stand.

The renderers are pure functions of a Snapshot, the leases held and the sweeps' views, so
golden files pin their output; `run_status` is the thin part that gathers those and prints.
Exit status: 0, or 3 when NVML cannot be used here (the GPU part is then one line saying
why, and the sweeps are shown all the same); a user error exits 2 through the CLI.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from launcher import nvml, rundir
from launcher.cpus import CpuUse, cpu_use
from launcher.leases import GpuLease, HeldLocks, lock_dir, read_gpu_leases
from launcher.nvml import Gpu, Snapshot
from launcher.rundir import ENDED_STATES, JobView, SweepView

EXIT_NO_NVML = 3
MIB = 1024 * 1024
SHOWN_PER_STATE = {"finished": 10, "pending": 5}  # per sweep; the newest finished, next pending
ENDED_SWEEPS_SHOWN = 3
SWEEPS_READ = 20  # newest sweeps read from the run directory
_STATE_ORDER = ("running", "waiting", "pending", "preempted", "finished", "failed", "cancelled",
                "timeout")


def _mib(n_bytes: int | None) -> str:
    return "?" if n_bytes is None else str(n_bytes // MIB)


def _na(value: Any, unit: str = "") -> str:
    return "N/A" if value is None else f"{value}{unit}"


def _cuda(version: int | None) -> str:
    return "N/A" if version is None else f"{version // 1000}.{version % 1000 // 10}"


def duration(seconds: float | None) -> str:
    """Return a short human duration: "42s", "5m12s", "2h05m", "3d04h"; "-" for None."""
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


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


def _gpu_line(gpu: Gpu, name_w: int, leases: Sequence[GpuLease]) -> list[str]:
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
        lines.append(" | ".join(mig_parts))
    return lines


def _header(snapshot: Snapshot | None, host: str, now: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    if snapshot is None:
        return f"{host}  {when}"
    return (f"{snapshot.host}  {when}  driver {_na(snapshot.driver_version)}  "
            f"CUDA {_cuda(snapshot.cuda_driver_version)}")


def _gpu_labels(snapshot: Snapshot | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for gpu in snapshot.gpus if snapshot else ():
        if gpu.uuid:
            labels[gpu.uuid] = str(gpu.index)
        for m in gpu.mig_devices:
            if m.uuid:
                labels[m.uuid] = f"{gpu.index}:{m.index}"
    return labels


def _job_gpu(job: JobView, labels: dict[str, str]) -> str:
    if job.gpus and all(u in labels for u in job.gpus):
        return ",".join(labels[u] for u in job.gpus)
    return ",".join(map(str, job.gpu_indices)) or "-"


def _short(text: str, width: int) -> str:
    # Job ids end in a hash that tells them apart; cut from the middle, keep the end.
    if len(text) <= width:
        return text
    if width < 2:
        return text[: max(width, 0)]
    tail = min(10, width - 1)
    return text[: width - tail - 1] + "~" + text[-tail:]


def _job_rows(view: SweepView, labels: dict[str, str], full_list: bool) -> list[str]:
    shown, hidden = list(view.jobs), {}
    if not full_list:  # a big sweep's many finished and pending jobs are counted, not listed
        for state, keep in SHOWN_PER_STATE.items():
            these = [j for j in shown if j.state == state]
            if len(these) > keep:
                hidden[state] = len(these) - keep
                drop = {id(j) for j in (these[:-keep] if state == "finished" else these[keep:])}
                shown = [j for j in shown if id(j) not in drop]
    width = min(44, max([len(j.job_id) for j in shown] + [3]))
    rows = [f"  {'JOB':<{width}}  {'STATE':<9} {'GPU':<5} {'EPOCH':>6} {'VAL_ACC':>8} "
            f"{'ELAPSED':>8} {'ETA':>8}"]
    for j in shown:
        started = j.epoch is not None or j.state not in ("pending", "waiting")
        epoch = f"{j.epoch or 0}/{j.epochs}" if j.epochs and started else "-"
        acc = "-" if j.val_accuracy is None else f"{100 * j.val_accuracy:.2f}%"
        row = (f"  {_short(j.job_id, width):<{width}}  {j.state:<9} {_job_gpu(j, labels):<5} "
               f"{epoch:>6} {acc:>8} {duration(j.elapsed_s):>8} {duration(j.eta_s):>8}")
        why = j.reason or ("queued" if j.state == "pending" else "")
        # Slurm's word (PENDING with its reason, RUNNING on which node) is worth a column
        # in every state; the local executor explains only jobs that are not running.
        explained = ("pending", "waiting", "failed", "timeout", "preempted")
        if why and (j.state in explained or view.executor == "slurm"):
            row += f"  {why}"
        rows.append(row.rstrip())
    rows += [f"  ... {n} more {state}" for state, n in hidden.items()]
    return rows


def _sweep_title(view: SweepView) -> str:
    counts = view.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in _STATE_ORDER if s in counts)
    supervisor = {"running": "supervisor running", "ended": "ended", "none": "",
                  "dead": f"SUPERVISOR DEAD (launch sweep --resume {view.sweep_id})"}
    words = [view.sweep_id, view.executor, supervisor.get(view.supervisor, view.supervisor),
             summary]
    return "  ".join(w for w in words if w)


def _active(view: SweepView) -> bool:
    return any(j.state not in ENDED_STATES for j in view.jobs)


def render_sweeps(sweeps: Sequence[SweepView], snapshot: Snapshot | None,
                  one_sweep: bool = False) -> list[str]:
    """Return the jobs section: active sweeps with their jobs, the newest ended ones briefly."""
    if not sweeps:
        return ["no sweeps of yours here (`launch sweep FILE` starts one)"]
    labels = _gpu_labels(snapshot)
    lines: list[str] = []
    recent = {id(v) for v in [v for v in sweeps if not _active(v)][-ENDED_SWEEPS_SHOWN:]}
    for view in sweeps:
        if one_sweep or _active(view):
            lines += ["", _sweep_title(view), *_job_rows(view, labels, one_sweep)]
        elif id(view) in recent:
            lines += ["", _sweep_title(view)]
    return lines[1:]


def render_status(snapshot: Snapshot | None, leases: Sequence[GpuLease],
                  sweeps: Sequence[SweepView], now: float, nvml_error: str | None = None,
                  host: str = "?", one_sweep: bool = False, cpu_use: CpuUse | None = None) -> str:
    """Return the gpustat-like view: header, one line per GPU, then the sweeps and jobs."""
    lines = [_header(snapshot, host, now)]
    if snapshot is None:
        lines.append(f"launch: {nvml_error}")
    else:
        name_w = max([len(g.name or "?") for g in snapshot.gpus] + [0])
        for gpu in snapshot.gpus:
            lines += _gpu_line(gpu, name_w, leases)
        if not snapshot.gpus:
            lines.append("no GPUs")
    if cpu_use is not None:
        lines.append(cpu_use.describe())
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
    return f"{held.user} {_short(held.job or '?', width - len(held.user) - 1)}"


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
                host: str = "?", one_sweep: bool = False, cpu_use: CpuUse | None = None) -> str:
    """Return the nvidia-smi style tables (GPUs, MIG devices, processes), then the sweeps."""
    if snapshot is None:
        lines = [_header(None, host, now), f"launch: {nvml_error}"]
    else:
        lines = gpu_tables(snapshot, leases, now)
    if cpu_use is not None:
        lines.append(cpu_use.describe())
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
                host: str = "?", cpu_use: CpuUse | None = None) -> dict[str, Any]:
    """Return everything status knows as JSON-ready data with stable keys."""
    gpus = []
    for gpu in snapshot.gpus if snapshot else ():
        item = plain(gpu)
        item["leases"] = [plain(h) for h in _leases_on(gpu, leases)]
        gpus.append(item)
    return {
        "format": "launch-status/1",
        "host": snapshot.host if snapshot else host,
        "time": now,
        "nvml_error": nvml_error,
        "driver_version": snapshot.driver_version if snapshot else None,
        "cuda_driver_version": snapshot.cuda_driver_version if snapshot else None,
        "gpus": gpus,
        "cpus": {"usable": cpu_use.usable, "held": cpu_use.held,
                 "by_user": dict(cpu_use.by_user)} if cpu_use else None,
        "sweeps": [{"sweep_id": v.sweep_id, "name": v.name, "executor": v.executor,
                    "created": v.created, "user": v.user, "host": v.host,
                    "supervisor": v.supervisor, "counts": v.counts(),
                    "jobs": [plain(j) for j in v.jobs]} for v in sweeps],
    }


def _gather(sweep: str | None,
            locks: HeldLocks) -> tuple[Snapshot | None, str | None, tuple, list[SweepView]]:
    """Return what status shows now: snapshot (or the NVML error), leases, sweeps."""
    snapshot, error = None, None
    try:
        snapshot = nvml.query()
    except nvml.NvmlUnavailable as exc:
        error = str(exc)
    held = read_gpu_leases(locks=locks)
    if sweep:
        views = [rundir.load_sweep_view(rundir.resolve_sweep_id(sweep))]
    else:
        me = rundir.current_user()
        views = [v for v in (rundir.load_sweep_view(s) for s in rundir.list_sweeps()[-SWEEPS_READ:])
                 if v.user == me]
    if any(v.executor == "slurm" for v in views):
        from launcher import slurm  # only when a Slurm sweep is shown: it costs an import

        views = [slurm.with_slurm_states(v, rundir.sweep_dir(v.sweep_id))
                 if v.executor == "slurm" else v for v in views]
    return snapshot, error, held, views


def _render_now(full: bool, as_json: bool, sweep: str | None) -> tuple[str, int]:
    import socket

    locks = HeldLocks()  # /proc/locks at most once, for the GPU leases and the CPU tokens
    locks.read_ahead(lock_dir(create=False))  # while NVML answers
    snapshot, error, held, views = _gather(sweep, locks)
    now, host = time.time(), socket.gethostname()
    cpus_now = cpu_use(locks=locks)
    if as_json:
        import json

        data = status_json(snapshot, held, views, now, error, host, cpu_use=cpus_now)
        text = json.dumps(data, indent=1) + "\n"
    else:
        render = render_full if full else render_status
        text = render(snapshot, held, views, now, error, host, one_sweep=bool(sweep),
                      cpu_use=cpus_now)
    return text, (EXIT_NO_NVML if error else 0)


def run_status(full: bool = False, as_json: bool = False, watch_s: float | None = None,
               sweep: str | None = None) -> int:
    """Print status once, or redraw it every watch_s seconds until Ctrl-C; return exit status.

    0 when all was shown, 3 (EXIT_NO_NVML) when NVML is unavailable but sweeps were shown.
    Ctrl-C during --watch is the normal way out and returns 0.
    """
    if watch_s is None:
        text, code = _render_now(full, as_json, sweep)
        sys.stdout.write(text)
        return code
    from launcher.errors import UserError

    if watch_s <= 0:
        raise UserError(f"--watch takes a positive number of seconds, not {watch_s}")
    redraw = sys.stdout.isatty() and not as_json
    try:
        while True:
            text, _ = _render_now(full, as_json, sweep)
            if redraw:
                # Home, draw over the old frame, clear what is left: no blank flicker.
                text = "\x1b[H" + text.replace("\n", "\x1b[K\n") + "\x1b[J"
            sys.stdout.write(text)
            sys.stdout.flush()
            time.sleep(watch_s)
    except KeyboardInterrupt:
        return 0
