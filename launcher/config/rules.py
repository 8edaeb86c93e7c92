"""House rules: one policy for every user of a shared box, in a file the admin owns.

`/etc/launch/rules.yaml` ($LAUNCH_RULES moves it, for tests and for groups without root):

    max_gpus_per_user: 2          # at once, on this machine, over all of a user's sweeps
    max_cpus_per_user: 16
    cpu_budget: 48                # the box's budget for every job (overrides a sweep's)
    reserved_gpus: [3]            # never leased: left for interactive work
    limits:                       # time windows, local time; the last matching one wins
      - {days: mon-fri, hours: "09:00-18:00", max_gpus_per_user: 1}
    users: {alice: {max_gpus_per_user: 4}}   # per-user exceptions, at all times
    drain: false                  # true: no new job starts; running jobs finish

What holds for a user at a moment (`in_force`): the top-level values, then those of the last
window that matches the moment, then the user's exception. A broken file is an error that
names the file, the line and the key, and no job starts under it: a broken policy must not
mean no policy. Supervisors read the file again when it changes (`RulesWatcher`), so an
edit or a window opening takes effect at the next placement; running jobs are never
stopped by a rule. Slurm sweeps ignore the file: Slurm has its own policy.

A file read without a fault is kept, checked, in the user's own cache (config/rulescache.py),
so that `launch status` on a box with rules does not pay for YAML on every call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from launcher.config import rulescache
from launcher.config.values import check, gpu_list, integer, optional
from launcher.errors import UserError
from launcher.machine.house import Caps, rules_path

if TYPE_CHECKING:
    from launcher.config.yamlsource import SourceMap

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60


def _bool(value: Any) -> tuple[str, tuple] | None:
    return None if isinstance(value, bool) else (f"must be true or false, got {value!r}", ())


# What the top level, a window or a user may set; windows and users set a part of it.
VALUE_RULES = {
    "max_gpus_per_user": optional(integer(0, 4096)),
    "max_cpus_per_user": optional(integer(0, 65536)),
    "cpu_budget": optional(integer(1, 65536)),
    "reserved_gpus": gpu_list,
    "drain": _bool,
}
WINDOW_KEYS = ("days", "hours", *VALUE_RULES)
USER_KEYS = ("max_gpus_per_user", "max_cpus_per_user")
TOP_KEYS = (*VALUE_RULES, "limits", "users")


class Window(NamedTuple):
    """A time window of the rules: on these days, between these times, these values hold."""

    days: frozenset[int]  # 0 is Monday; the day a window over midnight starts on
    start_min: int  # minutes after midnight
    end_min: int  # exclusive; at or before start_min: the window runs over midnight
    values: Mapping[str, Any]
    lines: Mapping[str, int]
    text: str  # as written: "mon-fri 09:00-18:00"

    def matches(self, now: datetime) -> bool:
        """Return whether the window holds at local time `now`."""
        minute, day = now.hour * 60 + now.minute, now.weekday()
        if self.start_min < self.end_min:
            return day in self.days and self.start_min <= minute < self.end_min
        return (day in self.days and minute >= self.start_min) or \
            ((day - 1) % 7 in self.days and minute < self.end_min)


class HouseRules(NamedTuple):
    """A checked rules file."""

    path: str
    values: Mapping[str, Any]  # top-level values set in the file
    lines: Mapping[str, int]  # line of each top-level key
    windows: tuple[Window, ...]
    users: Mapping[str, tuple[Mapping[str, Any], Mapping[str, int]]]  # name -> values, lines


def read_rules(path: Path | None = None) -> HouseRules | None:
    """Return the rules in the file, None when there is none; SweepFileError when broken."""
    path = rules_path() if path is None else Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        st = None  # read_yaml says why it cannot be read
    if st is not None:
        kept = rulescache.load(path, st)
        try:
            if kept is not None:
                return from_json(kept)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # a cache entry that is not what to_json wrote: read the file
    return _read(path, st)


def _read(path: Path, st: os.stat_result | None) -> HouseRules:
    """Return the rules the file holds, read and checked, and keep them in the cache."""
    from launcher.config.yamlsource import SourceMap, read_yaml

    raw, lines, _ = read_yaml(path)
    rules = parse_rules(raw, SourceMap(str(path), lines))
    if st is not None:
        rulescache.store(path, st, to_json(rules))
    return rules


def to_json(rules: HouseRules) -> dict[str, Any]:
    """Return checked rules as JSON values (from_json gives them back)."""
    return {"path": rules.path, "values": rules.values, "lines": rules.lines,
            "windows": [{**w._asdict(), "days": sorted(w.days)} for w in rules.windows],
            "users": rules.users}


def from_json(raw: dict[str, Any]) -> HouseRules:
    """Return the rules to_json wrote; KeyError, TypeError or ValueError if it is not that."""
    def values(found: dict) -> dict:
        out = dict(found)
        if "reserved_gpus" in out:
            out["reserved_gpus"] = tuple(out["reserved_gpus"])
        return out

    windows = tuple(Window(frozenset(w["days"]), int(w["start_min"]), int(w["end_min"]),
                           values(w["values"]), dict(w["lines"]), str(w["text"]))
                    for w in raw["windows"])
    users = {str(name): (values(v), dict(lines)) for name, (v, lines) in raw["users"].items()}
    return HouseRules(str(raw["path"]), values(raw["values"]), dict(raw["lines"]), windows,
                      users)


def parse_rules(raw: Any, src: SourceMap) -> HouseRules:
    """Return the rules a parsed file holds; raise SweepFileError at the first fault."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise src.error((), "the house rules must be a mapping of keys", TOP_KEYS)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in TOP_KEYS:
            raise src.error((key,), "unknown key", TOP_KEYS)
        if key in VALUE_RULES:
            values[key] = _value(src, (key,), key, value)
    windows = _windows(src, raw.get("limits"))
    users = _users(src, raw.get("users"))
    return HouseRules(src.file, values, _lines_of(src, (), values), windows, users)


def _value(src: SourceMap, path: tuple, key: str, value: Any) -> Any:
    value = check(src, path, value, VALUE_RULES[key])
    if key == "reserved_gpus":
        return tuple(str(v) for v in value)
    return value


def _lines_of(src: SourceMap, prefix: tuple, values: Mapping[str, Any]) -> dict[str, int]:
    return {key: src.locate(prefix + (key,))[1] or 1 for key in values}


def _windows(src: SourceMap, raw: Any) -> tuple[Window, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise src.error(("limits",), "must be a list of windows, like "
                        "{days: mon-fri, hours: \"09:00-18:00\", max_gpus_per_user: 1}")
    out = []
    for i, item in enumerate(raw):
        path = ("limits", i)
        if not isinstance(item, dict):
            raise src.error(path, "a window must be a mapping", WINDOW_KEYS)
        values = {}
        for key, value in item.items():
            if key not in WINDOW_KEYS:
                raise src.error(path + (key,), "unknown key", WINDOW_KEYS)
            if key in VALUE_RULES:
                values[key] = _value(src, path + (key,), key, value)
        if not values:
            raise src.error(path, "a window must set something", tuple(VALUE_RULES))
        days = _days(src, path + ("days",), item.get("days", "mon-sun"))
        start, end = _hours(src, path + ("hours",), item.get("hours", "00:00-24:00"))
        text = f"{_days_text(item.get('days', 'mon-sun'))} {item.get('hours', '00:00-24:00')}"
        out.append(Window(days, start, end, values, _lines_of(src, path, values), text))
    return tuple(out)


def _days(src: SourceMap, path: tuple, raw: Any) -> frozenset[int]:
    items = raw if isinstance(raw, list) else [raw]
    found: set[int] = set()
    for item in items:
        for part in item.split(",") if isinstance(item, str) else [None]:
            ends = [d.strip().lower() for d in part.split("-")] if isinstance(part, str) else []
            if not 1 <= len(ends) <= 2 or not all(d in DAYS for d in ends):
                raise src.error(path, f"days are day names or ranges, like mon-fri or "
                                f"sat,sun; got {raw!r}", DAYS)
            first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
            found |= {(first + k) % 7 for k in range((last - first) % 7 + 1)}
    return frozenset(found)


def _days_text(raw: Any) -> str:
    return ",".join(raw) if isinstance(raw, list) else str(raw)


_HOURS = re.compile(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})")


def _hours(src: SourceMap, path: tuple, raw: Any) -> tuple[int, int]:
    match = _HOURS.fullmatch(raw.strip()) if isinstance(raw, str) else None
    if match:
        h1, m1, h2, m2 = map(int, match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 < 24 and m1 < 60 and m2 < 60 and end <= MINUTES_PER_DAY and start != end:
            return start, end
    raise src.error(path, f"hours are a span of local time, like \"09:00-18:00\" or "
                    f"\"22:00-06:00\" (over midnight), \"24:00\" the end of the day; got {raw!r}")


def _users(src: SourceMap, raw: Any) -> dict[str, tuple[Mapping[str, Any], Mapping[str, int]]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise src.error(("users",), "must map user names to their exceptions, like "
                        "{alice: {max_gpus_per_user: 4}}")
    out = {}
    for name, item in raw.items():
        path = ("users", name)
        if not isinstance(name, str) or not name or not isinstance(item, dict):
            raise src.error(path, "must map a user name to a mapping of exceptions", USER_KEYS)
        values = {}
        for key, value in item.items():
            if key not in USER_KEYS:
                raise src.error(path + (key,), "unknown key", USER_KEYS)
            values[key] = _value(src, path + (key,), key, value)
        out[name] = (values, _lines_of(src, path, values))
    return out


def in_force(rules: HouseRules | None, user: str, now: datetime) -> Caps:
    """Return what the rules say for `user` at local time `now` (no rules: no caps)."""
    if rules is None:
        return Caps()
    name = os.path.basename(rules.path)
    values = dict(rules.values)
    where = {key: f"{name}:{line}" for key, line in rules.lines.items()}
    layers = [(w.values, w.lines) for w in rules.windows if w.matches(now)][-1:]
    if user in rules.users:
        layers.append(rules.users[user])
    for layer_values, layer_lines in layers:
        values.update(layer_values)
        where.update({key: f"{name}:{line}" for key, line in layer_lines.items()})
    return Caps(max_gpus=values.get("max_gpus_per_user"),
                max_cpus=values.get("max_cpus_per_user"),
                cpu_budget=values.get("cpu_budget"),
                reserved=tuple(values.get("reserved_gpus", ())),
                drain=bool(values.get("drain", False)), where=where)


def never_fits(rules: HouseRules | None, user: str, gpus: int, cpus: int) -> str | None:
    """Return why no moment of the rules would ever let a job of `user` start, or None."""
    if rules is None:
        return None
    exception = rules.users.get(user, ({}, {}))[0]
    checks = (("max_gpus_per_user", gpus, "GPUs"), ("max_cpus_per_user", cpus, "CPUs"),
              ("cpu_budget", cpus, "CPUs"))
    for key, need, what in checks:
        if not need:
            continue
        if key in exception:
            allowed = [exception[key]]
        else:  # the top level holds outside the windows, each window inside it
            allowed = [rules.values.get(key)] + \
                [w.values.get(key, rules.values.get(key)) for w in rules.windows]
        if all(cap is not None and cap < need for cap in allowed):
            return (f"a job needs {need} {what}, but the house rules ({rules.path}) allow "
                    f"{user} at most {max(allowed)} at any time ({key})")
    return None


def summary(rules: HouseRules, user: str, now: datetime) -> str:
    """Return the one line `launch status` prints: the rules in force, and their windows."""
    caps = in_force(rules, user, now)
    parts = []
    for key, what in (("max_gpus_per_user", "GPU"), ("max_cpus_per_user", "CPU")):
        base = rules.values.get(key)
        windows = [f"{w.values[key]} on {w.text}" for w in rules.windows if key in w.values]
        if base is None and not windows:
            continue
        text = f"{base} {what}{'s' * (base != 1)} per user" if base is not None else \
            f"no {what} cap per user"
        parts.append(text + (f" ({', '.join(windows)})" if windows else ""))
    if caps.cpu_budget is not None:
        parts.append(f"CPU budget {caps.cpu_budget}")
    if caps.reserved:
        parts.append(f"GPU {','.join(caps.reserved)} reserved")
    if caps.drain:
        parts.append("draining: no new job starts")
    if user in rules.users:
        mine = rules.users[user][0]
        parts.append("you: " + ", ".join(f"{key} {value}" for key, value in mine.items()))
    return "house rules: " + ("; ".join(parts) or "none set") + f" ({rules.path})"


class RulesWatcher:
    """The rules file as supervisors see it: read again whenever it changes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = rules_path() if path is None else Path(path)
        self.seen: tuple | None = ()  # the file's identity when last read; None: no file
        self.rules: HouseRules | None = None
        self.failure: UserError | None = None

    def current(self) -> HouseRules | None:
        """Return the rules now (None: no file); raise UserError while it is broken."""
        try:
            st = os.stat(self.path)
            seen: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        except OSError as err:
            seen = ("unreadable", err.errno)
        if seen != self.seen:
            self.seen = seen
            try:
                self.rules, self.failure = read_rules(self.path), None
            except UserError as err:
                self.rules, self.failure = None, err
        if self.failure is not None:
            raise self.failure
        return self.rules

    def caps(self, user: str, now: datetime | None = None) -> Caps | str:
        """Return what holds for `user` now, or the broken file's error."""
        try:
            rules = self.current()
        except UserError as err:
            return str(err)
        return in_force(rules, user, now or datetime.now())
