"""Who holds which slot file now, read without taking a lock (launcher/leases.py takes them).

Holders are read from /proc/locks rather than by trying the lock: a probing reader would
hold the lock for an instant, and a user acquiring at that instant would be turned away
from a free slot. Only where /proc/locks is missing, and for wait notices
(launcher/fairshare.py), is the lock tried.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple


class SlotState(NamedTuple):
    """Whether a slot file is held now, and what its holder wrote into it."""

    path: Path
    held: bool
    meta: Mapping[str, Any]


def _flock_inodes() -> set[int] | None:
    """Return the inode numbers that carry an flock now, or None without /proc/locks."""
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    held = set()
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 5095 fe:00:2146482 0 EOF"; "1: -> FLOCK ..." is a waiter
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK":
            held.add(int(parts[5].rsplit(":", 1)[1]))
    # Inode numbers only: on overlayfs the device in /proc/locks is the lower filesystem's.
    return held


def probe(path: Path) -> dict | None:
    """Return a held slot file's metadata by trying a shared lock, or None when it is free.

    The probe holds the lock for an instant and can turn an acquirer away, so leases are
    read from /proc/locks where it exists; wait notices (launcher/fairshare.py) are probed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # closing the descriptor drops the probe
    except BlockingIOError:
        return _meta_of(fd)
    finally:
        os.close(fd)


def _read_meta(path: Path) -> dict:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        return _meta_of(fd)
    finally:
        os.close(fd)


def _meta_of(fd: int) -> dict:
    try:
        meta = json.loads(os.pread(fd, 65536, 0) or b"{}")
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}  # mid-write, or not ours: status shows the holder as unknown


class HeldLocks:
    """Which inodes carry an flock now: /proc/locks, read once, on the first question.

    One instance answers several read_slots calls from the same moment. A lease directory
    with no slot files never causes the read, which takes milliseconds on some kernels.
    """

    __slots__ = ("_inodes", "_read", "_reader")

    def __init__(self) -> None:
        self._inodes: set[int] | None = None
        self._read = False
        self._reader: Any = None

    def read_ahead(self, directory: Path) -> None:
        """Start reading /proc/locks in a thread if `directory` holds any slot file.

        The read mostly waits in the kernel, so the caller can ask NVML meanwhile.
        """
        try:
            with os.scandir(directory) as entries:
                if not any(e.name.startswith(("gpu.", "cpu.")) for e in entries):
                    return
        except OSError:
            return
        import threading

        self._reader = threading.Thread(target=self._load, name="proc-locks", daemon=True)
        self._reader.start()

    def _load(self) -> None:
        self._inodes, self._read = _flock_inodes(), True

    def held(self, path: Path, st: os.stat_result) -> bool:
        """Return whether the slot file at path (lstat st) is flocked by anyone now."""
        if self._reader is not None:
            self._reader.join()
            self._reader = None
        if not self._read:
            self._load()
        if self._inodes is None:
            return probe(path) is not None  # no /proc/locks here: try the lock after all
        return st.st_ino in self._inodes


def read_slots(paths: Iterable[Path], locks: HeldLocks | None = None) -> list[SlotState]:
    """Return, for each slot file, whether it is held now and its holder's metadata.

    Missing files and symlinks count as free. Nothing here takes a lock unless the kernel
    has no /proc/locks. Pass one HeldLocks to several calls to read /proc/locks only once.
    """
    locks = locks or HeldLocks()
    out = []
    for path in map(Path, paths):
        try:
            st = os.lstat(path)
        except OSError:
            out.append(SlotState(path, False, {}))
            continue
        if not stat.S_ISREG(st.st_mode):
            out.append(SlotState(path, False, {}))
            continue
        held = locks.held(path, st)
        out.append(SlotState(path, held, _read_meta(path) if held else {}))
    return out
