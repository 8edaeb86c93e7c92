"""Leases: an exclusive flock on a slot file, held for a job's whole life.

Slot files live in one directory shared by every user ($LAUNCH_LOCK_DIR, default
/tmp/launch-leases, mode 1777): `gpu.<uuid>.<slot>` for GPUs, `cpu.<n>` for the CPU
budget (launcher/cpus.py). The kernel drops a flock when the last descriptor of its open
file goes away, so a holder killed by any means frees its slot at once and nothing ever
goes stale. The files are never unlinked: a lock on an unlinked file would protect nothing
against someone who opens a fresh file of the same name.

Who holds what, read without taking a lock, is launcher/holders.py.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from launcher.errors import UserError
from launcher.machine import holders

DEFAULT_LOCK_DIR = "/tmp/launch-leases"
_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class LeaseError(UserError):
    """The lease directory or a slot file is unsafe to use (symlink, wrong owner, mode)."""


def lock_dir(create: bool = True) -> Path:
    """Return the lease directory ($LAUNCH_LOCK_DIR), made safe and mode 1777 when create."""
    path = Path(os.environ.get("LAUNCH_LOCK_DIR") or DEFAULT_LOCK_DIR)
    if create:
        ensure_lock_dir(path)
    return path


def ensure_lock_dir(path: Path) -> None:
    """Create the shared lease directory (mode 1777 whatever the umask) or check it is safe."""
    try:
        os.mkdir(path, 0o1777)
        os.chmod(path, 0o1777)  # mkdir's mode went through the umask; chmod does not
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_IMODE(st.st_mode) != 0o1777 and st.st_uid != os.getuid():
        time.sleep(0.05)  # another user may have just made it and not yet chmod-ed it
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise LeaseError(f"lease directory {path} is not a plain directory; refusing to use it")
    mode = stat.S_IMODE(st.st_mode)
    if mode == 0o1777:
        return
    if st.st_uid == os.getuid():
        os.chmod(path, 0o1777)  # ours: repair it so other users can take leases too
        return
    # Without the sticky bit anyone could rename a held slot file away and break exclusion.
    if mode & 0o002 or st.st_uid != 0:
        raise LeaseError(f"lease directory {path} has mode {mode:o} and belongs to uid "
                         f"{st.st_uid}; it must be mode 1777 (set LAUNCH_LOCK_DIR elsewhere)")


class Lease:
    """A held slot: the open descriptor whose flock is the lease (a handle, not a value)."""

    __slots__ = ("fd", "path", "meta")

    def __init__(self, fd: int, path: Path, meta: Mapping[str, Any] | None = None):
        self.fd = fd
        self.path = path
        self.meta = dict(meta or {})

    def __repr__(self) -> str:
        return f"Lease(fd={self.fd}, path={str(self.path)!r}, meta={self.meta!r})"

    @property
    def key(self) -> str:
        """Return what the slot is for: the GPU UUID, or the file name (e.g. "cpu.3")."""
        return self.meta.get("uuid") or self.path.name

    @property
    def slot(self) -> int | None:
        """Return the slot number of a GPU lease, None for other slot files."""
        return self.meta.get("slot")

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """Replace the JSON that status shows for this slot (e.g. with the job's pid)."""
        self.meta = dict(meta)
        data = json.dumps(self.meta, sort_keys=True).encode() + b"\n"
        try:
            # Write first, then cut: a reader sees old or new text, never an empty file.
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))
        except OSError as exc:
            if exc.errno not in (errno.EBADF, errno.EACCES, errno.EPERM):
                raise  # EBADF: opened read-only (not our file); the lock still holds

    def release(self) -> None:
        """End the lease for every process sharing this descriptor, and close it."""
        if self.fd < 0:
            return
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.close()

    def close(self) -> None:
        """Close our copy only: a child given the fd (pass_fds) keeps holding the lease."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open_slot(path: Path) -> int:
    try:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            try:
                # O_EXCL: with fs.protected_regular, O_CREAT on another user's file in a
                # sticky directory fails, so create only when nobody has yet.
                fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666)
                os.fchmod(fd, 0o666)  # other users write their metadata into it later
            except FileExistsError:
                fd = os.open(path, _OPEN_FLAGS)
        except PermissionError:
            fd = os.open(path, (_OPEN_FLAGS & ~os.O_RDWR) | os.O_RDONLY)  # flock needs no write
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LeaseError(f"lease file {path} is a symbolic link; refusing to use it") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)  # a hard link could make us overwrite someone's file with metadata
        raise LeaseError(f"lease file {path} is not a plain file with one link; refusing it")
    return fd


def try_lock_slot(path: Path, meta: Mapping[str, Any]) -> Lease | None:
    """Return a Lease on the slot file, or None at once if someone holds it.

    The descriptor is close-on-exec; hand it to a child with subprocess's pass_fds.
    """
    fd = _open_slot(Path(path))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    lease = Lease(fd, Path(path))
    lease.write_meta(meta)
    return lease


# -- GPU leases ------------------------------------------------------------------------------

class GpuLease(NamedTuple):
    """A held GPU slot as status and the free-GPU policy see it."""

    uuid: str
    slot: int
    user: str
    host: str
    pid: int | None
    sweep: str | None
    job: str | None
    start: float | None
    jobs_per_gpu: int = 1  # how many jobs its sweep lets share the GPU


def gpu_slot_path(directory: Path, uuid: str, slot: int) -> Path:
    """Return the slot file of one GPU (or MIG) UUID."""
    # Old MIG UUIDs look like "MIG-GPU-<uuid>/1/0"; a slash cannot go in a file name.
    return Path(directory) / f"gpu.{uuid.replace('/', '_')}.{slot}"


def parse_gpu_slot(name: str) -> tuple[str, int]:
    """Return (uuid as in the file name, slot) of a `gpu.<uuid>.<slot>` file name."""
    body, _, slot = name.removeprefix("gpu.").rpartition(".")
    return body, int(slot)


def read_gpu_leases(directory: Path | None = None,
                    locks: holders.HeldLocks | None = None) -> tuple[GpuLease, ...]:
    """Return every GPU lease held now in the lease directory."""
    directory = Path(directory) if directory else lock_dir(create=False)
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith("gpu."))
    except OSError:
        return ()
    out = []
    for state in holders.read_slots((directory / n for n in names), locks):
        if not state.held:
            continue
        try:
            uuid, slot = parse_gpu_slot(state.path.name)
        except ValueError:
            continue  # not one of our slot names
        m = state.meta
        out.append(GpuLease(uuid=m.get("uuid", uuid), slot=slot, user=m.get("user", "?"),
                            host=m.get("host", "?"), pid=m.get("pid"), sweep=m.get("sweep"),
                            job=m.get("job"), start=m.get("start"),
                            jobs_per_gpu=int(m.get("jobs_per_gpu") or 1)))
    return tuple(out)


def acquire_gpus(uuids: Sequence[str], count: int, slots_per_gpu: int, meta: Mapping[str, Any],
                 directory: Path | None = None,
                 skip: Collection[Path] = ()) -> list[Lease] | None:
    """Return leases on `count` of the given UUIDs, tried in order, or None (all or nothing).

    Each lease's metadata gets its "uuid" and "slot" added. Slot files in `skip` (held by
    the caller's own running jobs) are not tried.
    """
    directory = Path(directory) if directory else lock_dir()
    held: list[Lease] = []
    try:
        for uuid in uuids:
            for slot in range(slots_per_gpu):
                path = gpu_slot_path(directory, uuid, slot)
                if path in skip:
                    continue
                lease = try_lock_slot(path, {**meta, "uuid": uuid, "slot": slot})
                if lease is not None:
                    held.append(lease)
                    break
            if len(held) == count:
                return held
    except BaseException:
        for lease in held:  # an unsafe slot file further on must not strand the ones we hold
            lease.release()
        raise
    for lease in held:
        lease.release()
    return None
