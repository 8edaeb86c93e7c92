"""`launch status --hosts`: the GPUs of several machines and this user's sweeps there, at once.

Every host is asked over ssh at the same time (launcher/hosts/probe.py); the answer comes when
the last host answers or the timeout passes. Exit status: 0 when every host answered (through
launch or, without it, nvidia-smi), 1 when some did not (the others are still shown); with
--pick, 1 when no host has N free GPUs. A user error exits 2 through the CLI.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from launcher.config.userconfig import (
    HostSettings,
    UserConfig,
    bad_host_name,
    config_path,
    load_user_config,
)
from launcher.errors import UserError
from launcher.hosts.probe import ask_hosts
from launcher.show.hosts_render import hosts_json, render_hosts
from launcher.show.hosts_view import HostReport, best_first

EXIT_UNANSWERED = 1  # some host did not answer
EXIT_NONE_FREE = 1  # --pick: no host has that many free GPUs
DEFAULT_TIMEOUT_S = 5.0
ALL = "all"


def chosen_hosts(names: str, config: UserConfig) -> list[HostSettings]:
    """Return the hosts --hosts names (a comma list; `all`: the settings file's hosts)."""
    picked: dict[str, HostSettings] = {}
    for name in (n.strip() for n in names.split(",")):
        if name == ALL:
            if not config.hosts:
                where = config.path or config_path()[0]
                raise UserError(f"--hosts all: no hosts in {where} (hosts: {{athena: {{}}}} "
                                "names one), or name them: --hosts athena,minerva")
            picked.update((h.name, h) for h in config.hosts if h.name not in picked)
            continue
        why = bad_host_name(name)
        if why:
            raise UserError(f"--hosts: {why}")
        picked.setdefault(name, config.host(name))
    return list(picked.values())


def _check(timeout_s: float, free: int | None, pick: int | None, as_json: bool,
           watch_s: float | None) -> None:
    if timeout_s <= 0:
        raise UserError(f"--timeout takes a positive number of seconds, not {timeout_s:g}")
    for flag, n in (("--free", free), ("--pick", pick)):
        if n is not None and n < 0:
            raise UserError(f"{flag} takes a number of GPUs (0 or more), not {n}")
    if pick is not None and (as_json or watch_s is not None or free is not None):
        raise UserError("--pick prints one host's name; it takes no --json, --watch or --free")
    if watch_s is not None and watch_s <= 0:
        raise UserError(f"--watch takes a positive number of seconds, not {watch_s:g}")


def _say_unanswered(reports: list[HostReport]) -> None:
    for report in reports:
        if report.status is None:
            print(f"launch: {report.host}: {report.error}", file=sys.stderr)


def _pick(reports: list[HostReport], count: int) -> int:
    best = best_first(reports, count)
    _say_unanswered(reports)
    if not best:
        asked = ", ".join(r.host for r in reports)
        print(f"launch: no host has {count} free GPUs (asked {asked})", file=sys.stderr)
        return EXIT_NONE_FREE
    print(best[0][0].host)
    return 0


def _render(reports: list[HostReport], free: int | None, as_json: bool, full: bool) -> str:
    shown = reports
    if free is not None:
        shown = [report for report, _ in best_first(reports, free)]
        _say_unanswered(reports)
    if as_json:
        import json

        return json.dumps(hosts_json(shown, time.time()), indent=1) + "\n"
    if not shown:
        return f"no host has {free} free GPUs\n"
    from launcher.commands.status import UNPROTECTED  # a host's lines read as they do there

    return render_hosts(shown, full, UNPROTECTED)


def run_hosts_status(hosts: str, timeout_s: float | None = None, as_json: bool = False,
                     full: bool = False, watch_s: float | None = None, free: int | None = None,
                     pick: int | None = None, sweep: str | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> int:
    """Return the exit status, having printed every host's status once (or every watch_s s)."""
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    _check(timeout_s, free, pick, as_json, watch_s)
    if sweep:
        raise UserError(f"--hosts shows each host's recent sweeps; for one sweep ask its host: "
                        f"ssh HOST launch status {sweep}")
    config = load_user_config()
    settings = chosen_hosts(hosts, config)
    if pick is not None:
        return _pick(ask_hosts(settings, config.ssh_config, timeout_s), pick)
    if watch_s is None:
        reports = ask_hosts(settings, config.ssh_config, timeout_s)
        sys.stdout.write(_render(reports, free, as_json, full))
        return EXIT_UNANSWERED if any(r.status is None for r in reports) else 0
    redraw = sys.stdout.isatty() and not as_json
    try:
        while True:
            text = _render(ask_hosts(settings, config.ssh_config, timeout_s), free, as_json, full)
            if redraw:  # as plain status --watch draws: home, over the old frame, clear the rest
                text = "\x1b[H" + text.replace("\n", "\x1b[K\n") + "\x1b[J"
            sys.stdout.write(text)
            sys.stdout.flush()
            sleep(watch_s)
    except KeyboardInterrupt:
        return 0
