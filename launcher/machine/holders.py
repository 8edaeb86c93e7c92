"""Who holds which slot file now, read without taking a lock (leases.py takes them).

Holders are read from /proc/locks rather than by trying the lock: a probing reader would
hold the lock for an instant, and a user acquiring at that instant would be turned away
from a free slot. Only where /proc/locks is missing, and for wait notices
(fairshare.py), is the lock tried.

What a holder says of itself is in meta/<uid>/<slot name>, a file only that user can write,
held flocked by the holder for as long as the lease: a stale or planted file is not held,
and the user it names is the owner of its folder, never what it says. Every field is read
through launcher/machine/foreign.py: another user may have written anything there.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from launcher.machine import foreign

META_DIR = "meta"  # leasedir.META_DIR (leasedir imports this module)


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
    """Return a held file's content by trying a shared lock, or None when it is free.

    The probe holds the lock for an instant and can turn an acquirer away, so leases are
    read from /proc/locks where it exists; wait notices (fairshare.py) are probed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # closing the descriptor drops the probe
    except BlockingIOError:
        return _content(fd)
    finally:
        os.close(fd)


def _content(fd: int) -> dict:
    try:
        return foreign.json_object(os.pread(fd, foreign.MAX_JSON_BYTES + 1, 0))
    except OSError:
        return {}  # mid-write, or not ours: status shows the holder as unknown


def _read_file(path: Path) -> dict:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        return _content(fd) if stat.S_ISREG(os.fstat(fd).st_mode) else {}
    finally:
        os.close(fd)


def user_folders(directory: Path) -> list[tuple[int, Path]]:
    """Return (uid, folder) of every meta/<uid> folder that its uid owns."""
    base = Path(directory) / META_DIR
    try:
        entries = list(os.scandir(base))
    except OSError:
        return []
    out = []
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if entry.name.isdigit() and stat.S_ISDIR(st.st_mode) and st.st_uid == int(entry.name):
            out.append((st.st_uid, Path(entry.path)))
    return sorted(out)


class HeldLocks:
    """Which inodes carry an flock now: /proc/locks, read once, on the first question.

    One instance answers several read_slots calls from the same moment. A lease directory
    with no slot files never causes the read, which takes milliseconds on some kernels.
    """

    __slots__ = ("_inodes", "_read", "_reader", "_folders")

    def __init__(self) -> None:
        self._inodes: set[int] | None = None
        self._read = False
        self._reader: Any = None
        self._folders: dict[Path, list[tuple[int, Path]]] = {}

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
        """Return whether the file at path (lstat st) is flocked by anyone now."""
        if self._reader is not None:
            self._reader.join()
            self._reader = None
        if not self._read:
            self._load()
        if self._inodes is None:
            return probe(path) is not None  # no /proc/locks here: try the lock after all
        return st.st_ino in self._inodes

    def folders(self, directory: Path) -> list[tuple[int, Path]]:
        """Return user_folders(directory), looked up once per instance."""
        if directory not in self._folders:
            self._folders[directory] = user_folders(directory)
        return self._folders[directory]


def is_held(path: Path, locks: HeldLocks, uid: int | None = None) -> bool:
    """Return whether path is a plain file (of uid, if given) that someone holds flocked now."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (uid is None or st.st_uid == uid) and \
        locks.held(path, st)


def holder_meta(directory: Path, name: str, locks: HeldLocks) -> dict:
    """Return what the holder of slot `name` says of itself, "user" its folder's owner."""
    for uid, folder in locks.folders(Path(directory)):
        path = folder / name
        if is_held(path, locks, uid):
            return {**_read_file(path), "user": foreign.user_name(uid)}
    return {}


def read_slots(directory: Path, names: Iterable[str],
               locks: HeldLocks | None = None) -> list[SlotState]:
    """Return, for each slot file name, whether it is held now and its holder's metadata.

    Missing files and anything but plain files count as free. Nothing here takes a lock
    unless the kernel has no /proc/locks. Pass one HeldLocks to several calls to read
    /proc/locks only once. A holder of the version that wrote its metadata into the slot
    file itself is read from there.
    """
    locks = locks or HeldLocks()
    directory = Path(directory)
    out = []
    for name in names:
        path = directory / name
        if not is_held(path, locks):
            out.append(SlotState(path, False, {}))
            continue
        meta = holder_meta(directory, name, locks) or _read_file(path)
        out.append(SlotState(path, True, meta))
    return out
