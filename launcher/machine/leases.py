"""Leases: flocks on slot files, held for a job's whole life.

The slot files lie in the lease directory ($LAUNCH_LOCK_DIR, default /tmp/launch-leases;
where it is and how it is kept safe to share: launcher/machine/leasedir.py), with every user's:

    gpu.<uuid>        the card: an exclusive job holds it LOCK_EX, each packed job LOCK_SH
    gpu.<uuid>.<k>    slot k of a card (LOCK_EX); an exclusive job takes slot 0 as well
    cpu.<n>           CPU token n (launcher/machine/cpus.py)
    meta/<uid>/NAME   what the holder of NAME says of itself (user, sweep, job, pid), written
                      and flocked by that holder alone; status reads it (holders.py)
    meta/<uid>/wait.<sweep>   a sweep's wait notice (launcher/machine/fairshare.py)
    sweeps/<id>       one empty file per sweep id ever made here: ids are unique per machine

The kernel drops a flock when the last descriptor of its open file goes away, so a holder
killed by any means frees its slot at once and nothing goes stale. Slot files are never
unlinked: a lock on an unlinked file would protect nothing against someone who opens a fresh
file of the same name.

A user can delete slot files they created, and the directory's owner any of them; then two
jobs can hold "the same" GPU. `sudo launch setup` (launcher/commands/setup.py) makes the
directory and every slot file root's, so no user can; the directory is then "protected" and
slot files are never created by users, only opened. docs/design.md: threat model.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from launcher.machine import foreign, holders
from launcher.machine.leasedir import flock_nb, lock_dir, own_locked_file, protected

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # flock needs no write


class Unusable(Exception):
    """A slot file that is there but cannot be a lease (planted by someone, or missing)."""


# -- one slot file ---------------------------------------------------------------------------

def _describe(path: Path) -> str:
    try:
        st = os.lstat(path)
    except OSError:
        return "gone"
    kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else \
        "not a plain file" if not stat.S_ISREG(st.st_mode) else \
        "hard-linked elsewhere" if st.st_nlink != 1 else "not readable by you"
    return f"{kind}, mode {stat.S_IMODE(st.st_mode):o}, owned by {foreign.user_name(st.st_uid)}"


def open_slot(path: Path, create: bool = True) -> int:
    """Return a descriptor of a slot file, creating it if missing (and create); Unusable if
    what is there cannot be a lease (a symlink, a FIFO, a file we may not read, a hard link).

    Nothing is ever written into a slot file, so a planted one can cost a GPU, never data.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        if not create:
            raise Unusable(f"{path.name} is missing from the protected lease directory: "
                           "ask the admin to run `sudo launch setup` again") from None
        try:
            # O_EXCL: with fs.protected_regular, O_CREAT on another user's file in a sticky
            # directory fails, so create only when nobody has yet.
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o644)
            os.fchmod(fd, 0o644)
        except FileExistsError:
            return open_slot(path, create=False)
        except OSError as exc:
            raise Unusable(f"cannot create {path.name}: {exc.strerror}") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENXIO):
            raise Unusable(f"{path.name} is {_describe(path)}") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise Unusable(f"{path.name} is {_describe(path)}")
    return fd


class Lease:
    """A held slot: the descriptors whose flocks are the lease, and what we say of it."""

    __slots__ = ("lock_fds", "meta_fd", "path", "meta")

    def __init__(self, lock_fds: list[int], path: Path, meta: Mapping[str, Any],
                 meta_fd: int | None = None):
        self.lock_fds = lock_fds
        self.meta_fd = meta_fd
        self.path = path  # the slot file whose name says what the lease is for
        self.meta = dict(meta)

    def __repr__(self) -> str:
        return f"Lease(path={str(self.path)!r}, meta={self.meta!r})"

    @property
    def key(self) -> str:
        """Return what the slot is for: the GPU UUID, or the file name (e.g. "cpu.3")."""
        return self.meta.get("uuid") or self.path.name

    @property
    def slot(self) -> int | None:
        """Return the slot number of a GPU lease, None for other slot files."""
        return self.meta.get("slot")

    @property
    def fds(self) -> tuple[int, ...]:
        """Return every descriptor the lease holds (lock files and metadata), to hand on."""
        return tuple(self.lock_fds) + (() if self.meta_fd is None else (self.meta_fd,))

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """Replace what status shows for this slot (e.g. with the job's pid)."""
        self.meta = dict(meta)
        if self.meta_fd is None:
            return
        data = json.dumps(self.meta, sort_keys=True).encode() + b"\n"
        # Write first, then cut: a reader sees old or new text, never an empty file.
        os.pwrite(self.meta_fd, data, 0)
        os.ftruncate(self.meta_fd, len(data))

    def release(self) -> None:
        """End the lease for every process sharing these descriptors, and close them."""
        for fd in self.fds:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_UN)
        self.close()

    def close(self) -> None:
        """Close our copies only: a child given the fds (pass_fds) keeps holding the lease."""
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self.lock_fds, self.meta_fd = [], None


def _take(paths: Sequence[tuple[Path, bool]], meta: Mapping[str, Any],
          create: bool) -> Lease | None:
    """Return a Lease holding every (path, shared) lock in order, or None (all or nothing)."""
    fds: list[int] = []
    try:
        for path, shared in paths:
            fd = open_slot(path, create)
            fds.append(fd)
            if not flock_nb(fd, shared):
                for held in fds:
                    os.close(held)
                return None
    except BaseException:
        for held in fds:
            os.close(held)
        raise
    name = paths[-1][0]
    lease = Lease(fds, name, meta, own_locked_file(name.parent, name.name))
    lease.write_meta(meta)
    return lease


def try_lock_slot(path: Path, meta: Mapping[str, Any]) -> Lease | None:
    """Return a Lease on one slot file, or None at once if someone holds it; Unusable if the
    file cannot be a lease. The descriptors are close-on-exec: hand them on with pass_fds."""
    path = Path(path)
    return _take([(path, False)], meta, create=not protected(path.parent))


# -- GPU leases ------------------------------------------------------------------------------

class GpuLease(NamedTuple):
    """A held GPU slot as status and the free-GPU policy see it (holders' words checked)."""

    uuid: str
    slot: int
    user: str
    host: str
    pid: int | None
    sweep: str | None
    job: str | None
    start: float | None
    jobs_per_gpu: int = 1  # how many jobs its sweep lets share the GPU
    need_bytes: int | None = None  # the GPU memory its job was promised; None: not known


def card_path(directory: Path, uuid: str) -> Path:
    """Return the card file of one GPU (or MIG) UUID."""
    # Old MIG UUIDs look like "MIG-GPU-<uuid>/1/0"; a slash cannot go in a file name.
    return Path(directory) / f"gpu.{uuid.replace('/', '_')}"


def gpu_slot_path(directory: Path, uuid: str, slot: int) -> Path:
    """Return slot file `slot` of one GPU (or MIG) UUID."""
    return Path(f"{card_path(directory, uuid)}.{slot}")


def parse_gpu_slot(name: str) -> tuple[str, int]:
    """Return (uuid as in the file name, slot) of a `gpu.<uuid>.<slot>` file name."""
    body, _, slot = name.removeprefix("gpu.").rpartition(".")
    return body, int(slot)


def gpu_lease(name: str, meta: Mapping[str, Any]) -> GpuLease | None:
    """Return the lease a held slot file's name and its holder's metadata describe."""
    try:
        uuid, slot = parse_gpu_slot(name)
    except ValueError:
        return None  # a card file, or not one of our names
    said = foreign.text(meta.get("uuid"), uuid)
    return GpuLease(uuid=said if said.replace("/", "_") == uuid else uuid, slot=slot,
                    user=foreign.text(meta.get("user")), host=foreign.text(meta.get("host")),
                    pid=foreign.integer(meta.get("pid"), low=1),
                    sweep=foreign.text(meta.get("sweep"), None),
                    job=foreign.text(meta.get("job"), None),
                    start=foreign.number(meta.get("start")),
                    # A holder that says nothing sensible is taken to want the card alone.
                    jobs_per_gpu=foreign.integer(meta.get("jobs_per_gpu"), 1, low=1) or 1,
                    need_bytes=foreign.integer(meta.get("need_bytes"), None, low=0))


def read_gpu_leases(directory: Path | None = None,
                    locks: holders.HeldLocks | None = None) -> tuple[GpuLease, ...]:
    """Return every GPU lease held now in the lease directory."""
    directory = Path(directory) if directory else lock_dir(create=False)
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith("gpu."))
    except OSError:
        return ()
    out = []
    for state in holders.read_slots(directory, names, locks):
        lease = gpu_lease(state.path.name, state.meta) if state.held else None
        if lease is not None:
            out.append(lease)
    return tuple(out)


def lock_gpu(directory: Path, uuid: str, jobs_per_gpu: int, meta: Mapping[str, Any],
             skip: Collection[Path] = ()) -> Lease | None:
    """Return a lease on one GPU for one job, or None while it is taken; Unusable if its
    lease files cannot be leases.

    A job that wants the card alone (jobs_per_gpu 1) locks the card exclusively, and slot 0
    as well (so that the version before cards, which knew slots only, sees it taken); a
    packed job shares the card's lock and takes one of its jobs_per_gpu slots. So an
    exclusive job and a packed one never share a card, whoever's they are.
    """
    create = not protected(directory)
    card = card_path(directory, uuid)
    for slot in range(jobs_per_gpu):
        path = gpu_slot_path(directory, uuid, slot)
        if path in skip:
            continue
        lease = _take([(card, jobs_per_gpu > 1), (path, False)],
                      {**meta, "uuid": uuid, "slot": slot}, create)
        if lease is not None or jobs_per_gpu == 1:
            return lease
    return None


def acquire_gpus(uuids: Sequence[str], count: int, slots_per_gpu: int, meta: Mapping[str, Any],
                 directory: Path | None = None, skip: Collection[Path] = (),
                 unusable: dict[str, str] | None = None) -> list[Lease] | None:
    """Return leases on `count` of the given UUIDs, tried in order, or None (all or nothing).

    Slot files in `skip` (held by the caller's own running jobs) are not tried. A GPU whose
    lease files cannot be leases is passed over, and why goes into `unusable` by UUID.
    """
    directory = Path(directory) if directory else lock_dir()
    held: list[Lease] = []
    try:
        for uuid in uuids:
            try:
                lease = lock_gpu(directory, uuid, slots_per_gpu, meta, skip)
            except Unusable as why:
                if unusable is not None:
                    unusable[uuid] = str(why)
                continue
            if lease is not None:
                held.append(lease)
            if len(held) == count:
                return held
    except BaseException:
        for lease in held:
            lease.release()
        raise
    for lease in held:
        lease.release()
    return None
