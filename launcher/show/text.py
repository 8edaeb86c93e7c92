"""Words and numbers as every command writes them: "1 job", "3 finished, 1 failed", "91.30%"."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from launcher.rundir.layout import JOB_ID_CHARS


def plural(n: int, word: str) -> str:
    """Return "1 job", "2 jobs": n and the word, with an s unless n is 1."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def counted(states: Iterable[str]) -> str:
    """Return how many of states are in each state, in first-seen order: "3 finished, 1 failed"."""
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def percent(fraction: float | None) -> str:
    """Return an accuracy as status shows it: "91.30%"; "-" for None."""
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def fmt_value(value: Any) -> str:
    """Return a swept value as the user would write it in YAML ("-" when absent)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


_UNSAFE = re.compile(f"[^{JOB_ID_CHARS}]+")


def value_slug(value: Any) -> str:
    """Return a swept value as a job id spells it: [A-Za-z0-9._=-] only, dicts and lists as
    their values joined by "-" (`{layer: fc2, min: 1}` -> fc2-1)."""
    if isinstance(value, dict):
        return "-".join(value_slug(v) for v in value.values())
    if isinstance(value, list):
        return "-".join(value_slug(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return _UNSAFE.sub("-", str(value))
