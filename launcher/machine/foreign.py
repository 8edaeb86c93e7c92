"""Reading what other users wrote: text made printable, numbers checked, sizes bounded.

On a shared box a lease file, a wait notice or a sweep folder may come from a careless or
hostile co-tenant (docs/design.md: threat model). Whatever they wrote is read through these
functions, so that no shape of data can crash a reader and no escape code reaches a terminal.
"""

from __future__ import annotations

import json
from typing import Any

MAX_TEXT = 200  # characters of a foreign string shown; a longer one is cut
MAX_JSON_BYTES = 65536  # of a foreign JSON file read; a larger one reads as unreadable


def text(value: Any, default: str = "?", limit: int = MAX_TEXT) -> str:
    """Return value as a printable one-line string (control characters as ?), or default."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return default
    out = "".join(c if c.isprintable() else "?" for c in str(value))
    return (out[: limit - 1] + "~") if len(out) > limit else out


def integer(value: Any, default: int | None = None, low: int = 0,
            high: int = 2**62) -> int | None:
    """Return value if it is an integer in [low, high], else default."""
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    return value if ok else default


def number(value: Any, default: float | None = None) -> float | None:
    """Return value as a float if it is a finite number, else default."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value) if value == value and abs(value) != float("inf") else default


def json_object(data: bytes) -> dict:
    """Return the JSON object in data, or {} when it is not one (or is too large)."""
    if len(data) > MAX_JSON_BYTES:
        return {}
    try:
        value = json.loads(data or b"{}")
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def user_name(uid: int) -> str:
    """Return the login name of uid, or the number when it has no passwd entry."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
