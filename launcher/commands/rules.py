"""`launch rules`: the house rules in force on this box, and `--check FILE` for a draft.

The rules themselves are launcher/config/rules.py; this prints them as a user meets them:
what holds for you now, where each value comes from, and the windows and exceptions.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from launcher.config import rules as house_rules
from launcher.machine.house import RULES_ENV
from launcher.machine.users import current_user


def describe(found: house_rules.HouseRules, user: str, now: datetime) -> list[str]:
    """Return the lines that show the rules in force for `user` at `now`, then the rest."""
    caps = house_rules.in_force(found, user, now)
    shown = {"max_gpus_per_user": caps.max_gpus, "max_cpus_per_user": caps.max_cpus,
             "cpu_budget": caps.cpu_budget, "reserved_gpus": list(caps.reserved) or None,
             "drain": caps.drain}
    lines = [f"in force for {user} now ({now:%a %H:%M}):"]
    for key, value in shown.items():
        where = caps.where.get(key)
        said = "not set" if value is None else str(value).lower() if isinstance(value, bool) \
            else ", ".join(value) if isinstance(value, list) else str(value)
        lines.append(f"  {key:<18} {said}" + (f"   ({where})" if where and value else ""))
    if found.windows:
        lines.append("windows (local time; the last that matches wins):")
        for window in found.windows:
            sets = ", ".join(f"{k} {v}" for k, v in window.values.items())
            now_on = "   <- now" if window.matches(now) else ""
            lines.append(f"  {window.text}: {sets}{now_on}")
    if found.users:
        lines.append("exceptions (at all times):")
        for name, (values, _) in found.users.items():
            lines.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    return lines


def run_rules(check: str | None) -> int:
    """Print the rules in force (or check a draft); return the exit status."""
    if check is not None:
        found = house_rules.read_rules(Path(check))  # SweepFileError: exit 2, one line
        if found is None:
            from launcher.errors import UserError

            raise UserError(f"{check}: no such file")
        print(f"{check}: valid house rules")
        print("\n".join(describe(found, current_user(), datetime.now())))
        return 0
    path = house_rules.rules_path()
    found = house_rules.read_rules(path)
    if found is None:
        print(f"no house rules: {path} does not exist (${RULES_ENV} names another file); "
              "each sweep's resources decide alone")
        return 0
    print(f"house rules: {path}")
    print("\n".join(describe(found, current_user(), datetime.now())))
    return 0
