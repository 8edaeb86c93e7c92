"""The house rules as last read without a fault, kept checked in the user's own cache.

`launch status` prints the rules in force on every call and must answer in a blink; parsing
YAML costs more than the rest of status together. So a rules file that read without a
fault is kept here as JSON, under the identity of the file it came from (device, inode,
size, modification and change times): any edit, or a file put in its place, misses the
cache and is read again. The cache is in $XDG_CACHE_HOME/launch (default ~/.cache/launch),
private to the user, so no co-tenant can plant rules in it; anything wrong with it is a
miss, never an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CACHE_HOME_ENV = "XDG_CACHE_HOME"
CACHE_FORMAT = "launch-rules-cache/1"


def cache_file(rules_file: Path) -> Path:
    """Return where the checked rules of rules_file are kept for this user."""
    base = os.environ.get(CACHE_HOME_ENV) or os.path.join(os.path.expanduser("~"), ".cache")
    # The path made a file name; two paths spelt alike only miss each other's entry.
    name = str(Path(rules_file).absolute()).strip("/").replace("/", "_")
    return Path(base) / "launch" / f"rules-{name}.json"


def identity(st: os.stat_result) -> list[int]:
    """Return what tells one version of a file from another, as the cache records it."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def load(rules_file: Path, st: os.stat_result) -> dict[str, Any] | None:
    """Return the rules kept for this very version of rules_file, or None."""
    try:
        with open(cache_file(rules_file), encoding="utf-8") as f:
            kept = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("format") != CACHE_FORMAT:
        return None
    if kept.get("file") != str(rules_file) or kept.get("identity") != identity(st):
        return None
    rules = kept.get("rules")
    return rules if isinstance(rules, dict) else None


def store(rules_file: Path, st: os.stat_result, rules: dict[str, Any]) -> None:
    """Keep the checked rules of this version of rules_file; a cache that cannot be
    written (a read-only home) is only a slower status."""
    path = cache_file(rules_file)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    data = {"format": CACHE_FORMAT, "file": str(rules_file), "identity": identity(st),
            "rules": rules}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
