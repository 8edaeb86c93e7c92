"""Whether logging out will kill a sweep: systemd-logind's KillUserProcesses.

A detached supervisor survives the SSH session closing (its own session, SIGHUP handled),
but where logind is set to KillUserProcesses=yes it kills every process left in the login
session's cgroup at logout, `setsid` or not. Nothing a process can do from inside the
session escapes that; the user can, by starting the sweep in a scope of their own user
manager and keeping that manager alive with lingering. So `launch sweep` says so, once, at
the start, instead of the sweep vanishing at logout.
"""

from __future__ import annotations

import re
import shutil
import subprocess

QUERY_TIMEOUT_S = 2.0


def _run(argv: list[str]) -> str | None:
    """Return a command's stdout, or None when it is missing, fails or hangs."""
    if not shutil.which(argv[0]):
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def in_login_session(cgroup_text: str) -> bool:
    """Return whether /proc/self/cgroup puts us in a logind session scope (session-N.scope)."""
    return re.search(r"/session-[^/\s]+\.scope\b", cgroup_text) is not None


def kills_user_processes(user: str) -> bool | None:
    """Return whether logind kills `user`'s session processes at logout; None: unknown.

    KillUserProcesses, narrowed by KillOnlyUsers (when set) and KillExcludeUsers.
    """
    manager = ["busctl", "get-property", "org.freedesktop.login1", "/org/freedesktop/login1",
               "org.freedesktop.login1.Manager"]
    kill = _run([*manager, "KillUserProcesses"])  # "b true"
    if kill is None or not kill.startswith("b "):
        return None
    if kill != "b true":
        return False
    only = (_run([*manager, "KillOnlyUsers"]) or "").split()[2:]  # 'as 0', 'as 1 "bob"'
    excluded = (_run([*manager, "KillExcludeUsers"]) or "").split()[2:]  # 'as 1 "root"'
    return f'"{user}"' not in excluded and (not only or f'"{user}"' in only)


def lingers(user: str) -> bool:
    """Return whether the user's systemd manager outlives their last login (Linger=yes)."""
    return _run(["loginctl", "show-user", user, "--property=Linger", "--value"]) == "yes"


def logout_warning(user: str, cgroup_text: str | None = None) -> str | None:
    """Return what to tell a user whose sweep logind would kill at logout, or None."""
    if cgroup_text is None:
        try:
            with open("/proc/self/cgroup") as f:
                cgroup_text = f.read()
        except OSError:
            return None
    if not in_login_session(cgroup_text) or not kills_user_processes(user):
        return None
    steps = "" if lingers(user) else "`loginctl enable-linger` once, then "
    return ("logind kills this login session's processes at logout (KillUserProcesses=yes): "
            f"the sweep would stop when you log out. To keep it running, run {steps}"
            "`systemd-run --user --scope launch sweep ...`, or `launch sweep --resume` "
            "after logging in again")

