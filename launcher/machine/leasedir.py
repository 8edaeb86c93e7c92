"""The lease directory: where it is, made safe to share, whether `launch setup` protected it,
the record of sweep ids made on this machine, and each user's own folder of metadata in it.

    $LAUNCH_LOCK_DIR (default /tmp/launch-leases), mode 1777, or root's after `launch setup`
    meta/<uid>/       what a user's leases and waits say of themselves (holders.py)
    sweeps/<id>       one empty file per sweep id ever made here: ids are unique per machine
    setup.json        written by `launch setup`: the directory is root's on purpose

The slot files in it and the flocks on them are launcher/machine/leases.py.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path

from launcher.errors import UserError
from launcher.machine import foreign, holders

DEFAULT_LOCK_DIR = "/tmp/launch-leases"
META_DIR = holders.META_DIR
SWEEPS_DIR = "sweeps"
SETUP_RECORD = "setup.json"  # written by `launch setup`: the directory is root's on purpose
SLOTS_PER_GPU = 16  # slot files `launch setup` makes per GPU: the most jobs_per_gpu can be


class LeaseError(UserError):
    """The lease directory itself is unsafe to use (a symlink, a stranger's, a wrong mode)."""


def lock_dir(create: bool = True) -> Path:
    """Return the lease directory ($LAUNCH_LOCK_DIR), made safe and mode 1777 when create."""
    path = Path(os.environ.get("LAUNCH_LOCK_DIR") or DEFAULT_LOCK_DIR)
    if create:
        ensure_lock_dir(path)
    return path


def ensure_lock_dir(path: Path) -> None:
    """Create the shared lease directory (mode 1777 whatever the umask) or check it is safe."""
    ensure_shared(path)


def ensure_shared(path: Path) -> None:
    """Make path a 1777 directory if missing; raise LeaseError unless it is safe to share."""
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
    if mode == 0o1777 or (st.st_uid == 0 and not mode & 0o022):  # shared, or root's (setup)
        return
    if st.st_uid == os.getuid():
        os.chmod(path, 0o1777)  # ours: repair it so other users can take leases too
        return
    # Without the sticky bit anyone could rename a held slot file away and break exclusion.
    raise LeaseError(f"lease directory {path} has mode {mode:o} and belongs to uid "
                     f"{st.st_uid}; it must be mode 1777 or root's (set LAUNCH_LOCK_DIR "
                     "elsewhere, or ask the admin to run `sudo launch setup`)")


def protected(directory: Path) -> bool:
    """Return whether only root can create or delete slot files here (`launch setup` ran)."""
    try:
        st = os.lstat(directory)
        record = os.lstat(Path(directory) / SETUP_RECORD)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and \
        not stat.S_IMODE(st.st_mode) & 0o022 and stat.S_ISREG(record.st_mode) and \
        record.st_uid == 0


def slots_per_gpu(directory: Path) -> int | None:
    """Return the most jobs per GPU a protected directory has slot files for; None if not."""
    if not protected(directory):
        return None
    try:
        raw = (Path(directory) / SETUP_RECORD).read_bytes()
    except OSError:
        return None
    return foreign.integer(foreign.json_object(raw).get("slots_per_gpu"), low=1)


def claim_sweep_id(sweep_id: str, directory: Path | None = None) -> bool:
    """Return whether sweep_id is ours now: no sweep of that id was made on this machine.

    Two runs folders may each make a sweep of the same name in the same second; the ids
    must still differ, since a resume finds a sweep's leftover processes by it. Where the
    machine-wide record cannot be written, the runs folder alone decides (True).
    """
    try:
        directory = Path(directory) if directory else lock_dir()
        base = directory / SWEEPS_DIR
        if not protected(directory):
            ensure_shared(base)
        os.close(os.open(base / sweep_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW,
                         0o444))
        return True
    except FileExistsError:
        return False
    except (OSError, LeaseError):
        return True


def flock_nb(fd: int, shared: bool = False) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def own_folder(directory: Path) -> Path | None:
    """Return our folder meta/<uid> in the lease directory (made if missing), None if unsafe."""
    try:
        base = Path(directory) / META_DIR
        if not protected(Path(directory)):
            ensure_shared(base)
        mine = base / str(os.getuid())
        try:
            os.mkdir(mine, 0o755)
        except FileExistsError:
            pass
        st = os.lstat(mine)
    except (OSError, LeaseError):
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return None  # someone planted our folder: we go without metadata
    return mine


def own_locked_file(directory: Path, name: str) -> int | None:
    """Return a descriptor of meta/<uid>/name, ours and flocked, or None if that cannot be."""
    mine = own_folder(directory)
    if mine is None:
        return None
    try:
        fd = os.open(mine / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        return None  # metadata is for status only: never a reason to refuse a lease
    if os.fstat(fd).st_uid != os.getuid() or not flock_nb(fd):
        os.close(fd)
        return None
    return fd
