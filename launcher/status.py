"""`launch status`: the GPUs, who uses them, and where this user's sweeps stand.

This module gathers (NVML, the GPU leases, CPU use, the sweeps' views) and prints;
`launcher.status_render` and `launcher.sweep_table` turn what it gathered into text or JSON.
Exit status: 0, or 3 when NVML cannot be used here (the GPU part is then one line saying
why, and the sweeps are shown all the same); a user error exits 2 through the CLI.
"""

from __future__ import annotations

import sys
import time

from launcher import nvml, rundir
from launcher.cpus import cpu_use
from launcher.holders import HeldLocks
from launcher.leases import lock_dir, read_gpu_leases
from launcher.nvml import Snapshot
from launcher.status_render import render_full, render_status, status_json
from launcher.views import SweepView, load_sweep_view

EXIT_NO_NVML = 3
SWEEPS_READ = 20  # newest sweeps read from the run directory


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
        views = [load_sweep_view(rundir.resolve_sweep_id(sweep))]
    else:
        me = rundir.current_user()
        views = [v for v in (load_sweep_view(s) for s in rundir.list_sweeps()[-SWEEPS_READ:])
                 if v.user == me]
    if any(v.executor == "slurm" for v in views):
        from launcher import slurm_status  # only when a Slurm sweep is shown: it costs an import

        views = [slurm_status.with_slurm_states(v, rundir.sweep_dir(v.sweep_id))
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
