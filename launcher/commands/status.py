"""`launch status`: the GPUs, who uses them, and where this user's sweeps stand.

This module gathers (NVML, the GPU leases, CPU use, the sweeps' views) and prints;
launcher/show/status_render.py and sweep_table.py turn what it gathered into text or JSON.
Exit status: 0, or 3 when NVML cannot be used here (the GPU part is then one line saying
why, and the sweeps are shown all the same); a user error exits 2 through the CLI.
"""

from __future__ import annotations

import sys
import time

from launcher.machine import nvml
from launcher.machine.cpus import cpu_use
from launcher.machine.holders import HeldLocks
from launcher.machine.house import rules_path
from launcher.machine.leasedir import lock_dir, protected
from launcher.machine.leases import read_gpu_leases
from launcher.machine.nvml import Snapshot
from launcher.machine.users import current_user
from launcher.rundir.index import known_sweeps
from launcher.rundir.layout import SweepPaths
from launcher.show.status_render import render_full, render_status, reserved_in, status_json
from launcher.show.views import SweepView, load_or_say_why

EXIT_NO_NVML = 3
SWEEPS_READ = 20  # newest sweeps read from the run directory
UNPROTECTED = ("leases: not protected: any user can delete a lease file and put a second job "
               "on its GPU (the admin's `sudo launch setup` prevents it)")


def _sweeps(sweep: str | None) -> list[tuple[SweepPaths, SweepView]]:
    """Return the sweeps status shows, with their views as their files say."""
    if sweep:
        from launcher.rundir.names import resolve_sweep

        paths = resolve_sweep(sweep)
        return [(paths, load_or_say_why(paths))]
    me = current_user()
    found = [(paths, load_or_say_why(paths)) for paths in known_sweeps()[-SWEEPS_READ:]]
    return [(paths, view) for paths, view in found if view.user == me]


class _Asked:
    """Slurm's one answer for every sweep shown, asked in a thread while NVML answers."""

    def __init__(self, names: list[str]) -> None:
        import threading

        from launcher.slurm import query

        self.rows: list[dict] | None = None
        self._thread = threading.Thread(target=self._ask, args=(query, names), daemon=True)
        self._thread.start()

    def _ask(self, query, names: list[str]) -> None:
        self.rows = query.ask_by_name(names)

    def answer(self) -> list[dict] | None:
        """Return squeue's rows, or None when it did not answer in time."""
        self._thread.join()
        return self.rows


def _gather(sweep: str | None,
            locks: HeldLocks) -> tuple[Snapshot | None, str | None, tuple, list[SweepView]]:
    """Return what status shows now: snapshot (or the NVML error), leases, sweeps.

    Slurm is asked once, for every Slurm sweep shown, with a short timeout, while NVML
    answers; a sweep whose jobs have all ended costs no question.
    """
    views = _sweeps(sweep)
    slurm = [(paths, view) for paths, view in views if view.executor == "slurm"]
    asked = None
    if slurm:  # only when a Slurm sweep is shown: it costs an import
        from launcher.slurm import query

        names = [view.sweep_id for _, view in slurm if query.needs_asking(view)]
        asked = _Asked(names) if names else None
    snapshot, error = None, None
    try:
        snapshot = nvml.query()
    except nvml.NvmlUnavailable as exc:
        error = str(exc)
    held = read_gpu_leases(locks=locks)
    if slurm:
        rows = asked.answer() if asked else []
        views = [(paths, query.with_answer(view, paths, rows) if view.executor == "slurm"
                  else view) for paths, view in views]
    return snapshot, error, held, [view for _, view in views]


def _render_now(full: bool, as_json: bool, sweep: str | None) -> tuple[str, int]:
    import socket

    locks = HeldLocks()  # /proc/locks at most once, for the GPU leases and the CPU tokens
    locks.read_ahead(lock_dir(create=False))  # while NVML answers
    snapshot, error, held, views = _gather(sweep, locks)
    if sweep and views and views[0].executor == "slurm":
        error = None  # this box's GPUs are not that sweep's: a login node need have none
    now, host = time.time(), socket.gethostname()
    cpus_now = cpu_use(locks=locks)
    safe = protected(lock_dir(create=False))
    rules = house_rules(now)
    if as_json:
        import json

        data = status_json(snapshot, held, views, now, error, host, cpu_use=cpus_now,
                           leases_protected=safe, user=current_user())
        data["house_rules"] = rules
        text = json.dumps(data, indent=1) + "\n"
    else:
        notes = [] if safe else [UNPROTECTED]
        notes += [rules["summary"]] if rules else []
        shown = {"one_sweep": bool(sweep), "cpu_use": cpus_now, "note": "\n".join(notes) or None}
        if full:
            text = render_full(snapshot, held, views, now, error, host, **shown)
        else:
            text = render_status(snapshot, held, views, now, error, host, **shown,
                                 reserved=reserved_in(rules))
    return text, (EXIT_NO_NVML if error else 0)


def house_rules(now: float) -> dict | None:
    """Return what status says of the house rules, None when the box has no rules file.

    Only a box with a rules file pays for reading YAML (launcher/config/rules.py).
    """
    import os

    from launcher.errors import UserError

    path = str(rules_path())
    if not os.path.lexists(path):
        return None
    from datetime import datetime

    from launcher.config import rules

    try:
        found = rules.read_rules()
    except UserError as err:
        return {"file": path, "error": str(err),
                "summary": f"house rules: BROKEN, so no job starts until it is fixed: {err}"}
    if found is None:
        return None
    user, when = current_user(), datetime.fromtimestamp(now)
    caps = rules.in_force(found, user, when)
    return {"file": path, "error": None, "summary": rules.summary(found, user, when),
            "in_force": {"max_gpus_per_user": caps.max_gpus, "max_cpus_per_user": caps.max_cpus,
                         "cpu_budget": caps.cpu_budget, "reserved_gpus": list(caps.reserved),
                         "drain": caps.drain}}


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
