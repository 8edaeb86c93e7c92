"""Reading and writing the run directory's plain files: whole files, and readers that forgive.

Every write replaces a file in one rename (launcher/contract.py: atomic_write), so a reader
sees the old file or the new one. Every reader takes a missing, torn or foreign file in its
stride: a half-written line of a .jsonl is skipped, a file that is not JSON reads as absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from launcher.contract import atomic_write

TAIL_BLOCK_BYTES = 8192  # read backwards this much at a time to find the last lines
LOG_TAIL_LINES = 20
LOG_MARK = "[launch]"  # begins the line an executor writes into a job's log when a run starts
LOG_TAIL_MAX_BYTES = 4096  # a job's last lines kept in its state: bounded, whatever it printed


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path so that readers see the old file or the new one, never half."""
    atomic_write(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write obj as JSON to path atomically."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    """Return the JSON in path, or default when it is missing or not (yet) valid."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return default


def read_last_jsonl(path: Path) -> dict | None:
    """Return the last complete JSON line (a mapping) of a .jsonl file, or None."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BLOCK_BYTES))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def read_jsonl(path: Path) -> list[dict]:
    """Return every complete JSON line (mapping) of a .jsonl file; a torn line is skipped."""
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def tail_offset(f, lines: int) -> int:
    """Return the byte offset where the last `lines` lines of an open binary file begin."""
    end = f.seek(0, os.SEEK_END)
    if lines <= 0:
        return end
    # a final newline ends the last line; it does not start a new one
    f.seek(max(0, end - 1))
    pos = end - 1 if f.read(1) == b"\n" else end
    newlines = 0
    while pos > 0:
        start = max(0, pos - TAIL_BLOCK_BYTES)
        f.seek(start)
        block = f.read(pos - start)
        for i in range(len(block) - 1, -1, -1):
            if block[i] == 0x0A:
                newlines += 1
                if newlines == lines:
                    return start + i + 1
        pos = start
    return 0


def this_run(tail: str) -> str:
    """Return the part of a job's log tail its last run wrote: what follows the last line an
    executor wrote at a run's start (LOG_MARK), or all of it."""
    lines = tail.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(LOG_MARK)]
    return "\n".join(lines[starts[-1] + 1:] if starts else lines)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = LOG_TAIL_MAX_BYTES) -> str:
    """Return the last lines of a log ("" when there is none), at most max_bytes of them.

    What a job's state keeps of a failed run's output: a progress bar redrawn with carriage
    returns can be one line of megabytes, so the tail is cut to its last max_bytes.
    """
    try:
        with open(path, "rb") as f:
            start = tail_offset(f, lines)
            end = f.seek(0, os.SEEK_END)
            f.seek(max(start, end - max_bytes))
            return f.read().decode(errors="replace").rstrip("\n")
    except OSError:
        return ""
