"""The user's own index of sweeps: where each sweep they made lives, read from any folder.

A sweep lives in its runs folder ($LAUNCH_RUNS_DIR or ./runs: rundir/layout.py); the index
only says where, so that `launch status`, `logs`, `results`, `cancel` and `sweep --resume`
find it after `cd ~` or a new SSH login. It is one JSON line per sweep in
$XDG_STATE_HOME/launch/ (default ~/.local/state/launch/), private to the user. A line is
appended when a sweep is made; `launch forget` rewrites the file without one. Both hold
the folder's lock file, so a forget never drops a line appended meanwhile; readers take no
lock (an append is one write, a rewrite one rename) and skip a line they cannot read.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from launcher.rundir.layout import SweepPaths, runs_dir
from launcher.rundir.sweepdir import list_sweeps

STATE_HOME_ENV = "XDG_STATE_HOME"
INDEX_NAME = "sweeps.jsonl"


class Entry(NamedTuple):
    """One sweep the index knows: its id, where its folder is, when it was made."""

    sweep_id: str
    root: str
    created: float

    @property
    def paths(self) -> SweepPaths:
        return SweepPaths(Path(self.root))


def index_dir() -> Path:
    """Return the index's folder: $XDG_STATE_HOME/launch, or ~/.local/state/launch."""
    base = os.environ.get(STATE_HOME_ENV) or os.path.join(os.path.expanduser("~"), ".local",
                                                           "state")
    return Path(base) / "launch"


def index_file() -> Path:
    """Return the index file itself."""
    return index_dir() / INDEX_NAME


@contextmanager
def _locked() -> Iterator[Path]:
    folder = index_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder / INDEX_NAME
    finally:
        os.close(fd)


def record(paths: SweepPaths, created: float) -> None:
    """Add a sweep to the index; a home that cannot be written only costs the note."""
    line = json.dumps({"id": paths.sweep_id, "root": str(paths.root.absolute()),
                       "created": created}) + "\n"
    try:
        with _locked() as path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
    except OSError as err:
        import sys

        print(f"launch: warning: cannot record {paths.sweep_id} in {index_dir()} "
              f"({err.strerror}): only `launch ... SWEEP` from {paths.runs.parent} finds it",
              file=sys.stderr)


def entries() -> list[Entry]:
    """Return the sweeps the index knows, oldest first, one per folder."""
    try:
        text = index_file().read_text(errors="replace")
    except OSError:
        return []
    found: dict[str, Entry] = {}
    for line in text.splitlines():
        try:
            raw = json.loads(line)
            entry = Entry(str(raw["id"]), str(raw["root"]), float(raw.get("created") or 0))
        except (ValueError, TypeError, KeyError):
            continue
        found.pop(entry.root, None)
        found[entry.root] = entry
    return sorted(found.values(), key=lambda e: e.created)


def forget(roots: set[str]) -> int:
    """Drop the entries of these folders from the index; return how many were dropped."""
    with _locked() as path:
        kept = [e for e in entries() if e.root not in roots]
        dropped = len(entries()) - len(kept)
        tmp = path.with_name(f".{INDEX_NAME}.tmp")
        tmp.write_text("".join(json.dumps({"id": e.sweep_id, "root": e.root,
                                           "created": e.created}) + "\n" for e in kept))
        os.replace(tmp, path)
    return dropped


def known_sweeps(runs: Path | None = None) -> list[SweepPaths]:
    """Return the sweeps of the runs folder and those of the index, least recently changed
    first (as `list_sweeps` orders them); index entries whose folder is gone are left out."""
    here = list_sweeps(runs)
    if runs is not None:
        return here
    seen = {p.root for p in here}
    found = [(_mtime(p), p) for p in here]
    for entry in entries():
        paths = entry.paths
        if paths.root in seen or not paths.sweep_json.is_file():
            continue
        seen.add(paths.root)
        found.append((_mtime(paths), paths))
    found.sort(key=lambda item: (item[0], item[1].sweep_id))
    return [paths for _, paths in found]


def _mtime(paths: SweepPaths) -> float:
    try:
        return os.stat(paths.root).st_mtime
    except OSError:
        return 0.0


def where(paths: SweepPaths) -> str:
    """Return where a sweep's folder is, as short as the user reads it: runs/x, ~/runs/x."""
    root = str(paths.root)
    here = str(runs_dir().parent)
    if root.startswith(here + os.sep):
        return os.path.relpath(root, here)
    home = os.path.expanduser("~")
    return "~" + root[len(home):] if root.startswith(home + os.sep) else root
