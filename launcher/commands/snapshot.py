"""`launch snapshot`: what NVML and psutil say now, as a replayable (and shareable) file."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from launcher.machine import nvml


def dumps(raw: Mapping[str, Any]) -> str:
    """Return a snapshot dict as the JSON text `launch snapshot` prints."""
    return json.dumps(raw, indent=1) + "\n"


def _fake_uuid(uuid: str) -> str:
    import hashlib

    prefix, _, _ = uuid.partition("-")
    h = hashlib.sha256(uuid.encode()).hexdigest()
    return f"{prefix}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def anonymized(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy without host name, user names, arguments or real UUIDs."""
    out = json.loads(json.dumps(raw))
    out["host"] = "host"
    users: dict[str, str] = {"root": "root"}
    for info in out.get("processes", {}).values():
        if isinstance(info.get("user"), str):
            info["user"] = users.setdefault(info["user"], f"user{len(users)}")
        if isinstance(info.get("cmdline"), list):
            # Arguments can hold paths and secrets; the program name is enough to read.
            info["cmdline"] = [os.path.basename(a) for a in info["cmdline"][:1]]
    for dev in out.get("devices", []):
        for item in [dev, *dev.get("mig_devices", [])]:
            if isinstance(item.get("uuid"), str):
                item["uuid"] = _fake_uuid(item["uuid"])
    return out


def run_snapshot(anonymize: bool = False) -> int:
    """Print this machine's snapshot as JSON to stdout; return the exit status (0)."""
    raw = nvml.capture_raw()
    if raw.get("init_error"):
        # Still a valid snapshot: it reproduces a machine without a driver.
        print("launch: " + nvml.describe_init_error(raw["host"], raw["init_error"]),
              file=sys.stderr)
    sys.stdout.write(dumps(anonymized(raw) if anonymize else raw))
    return 0
