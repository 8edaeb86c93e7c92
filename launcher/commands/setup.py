"""`sudo launch setup`: make the lease directory root's, so that no user can break a lease.

In a directory every user may write (mode 1777), the creator of a slot file and the owner of
the directory can delete it; the next job then creates a fresh file of that name and holds
"the same" GPU as a job still running (docs/design.md: threat model). After setup the
directory and every slot file belong to root: users open them, read-only, and flock them,
and nobody but root can delete, replace or plant one. What users still write goes into
folders of their own: meta/<uid>/ (what a holder says of itself, wait notices) and sweeps/
(the machine's sweep ids).

Idempotent: run it again after adding GPUs or changing MIG devices; slot files held by
running jobs stay held (flocks do not care who owns the file).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

from launcher.errors import UserError
from launcher.machine import cpus, leasedir, leases, nvml, ports

TMPFILES = Path("/etc/tmpfiles.d/launch-leases.conf")


def wanted_files(snapshot: nvml.Snapshot | None, slots_per_gpu: int,
                 n_cpus: int) -> list[str]:
    """Return the slot file names the directory must hold for this machine: CPU tokens,
    GPU cards and their slots, rendezvous ports."""
    names = [f"cpu.{n}" for n in range(n_cpus)]
    names += ports.slot_names()
    for gpu in snapshot.gpus if snapshot else ():
        for uuid in [gpu.uuid, *(m.uuid for m in gpu.mig_devices)]:
            if uuid:
                names.append(leases.card_path(Path("."), uuid).name)
                names += [leases.gpu_slot_path(Path("."), uuid, k).name
                          for k in range(slots_per_gpu)]
    return names


def _own(path: Path, mode: int) -> None:
    """Make path root's with mode, refusing a symlink (someone planted it)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UserError(f"{path} is a symbolic link; remove it and run `launch setup` again")
    os.chown(path, 0, 0, follow_symlinks=False)
    os.chmod(path, mode)


def make_protected(directory: Path, names: list[str],
                   slots_per_gpu: int = leasedir.SLOTS_PER_GPU) -> tuple[int, int]:
    """Make directory, its shared folders and every slot file root's; return (made, fixed)."""
    directory.mkdir(parents=True, exist_ok=True)
    _own(directory, 0o755)
    for shared in (leasedir.META_DIR, leasedir.SWEEPS_DIR):
        (directory / shared).mkdir(exist_ok=True)
        _own(directory / shared, 0o1777)
    made = fixed = 0
    for name in names:
        path = directory / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1):
            os.unlink(path)  # planted: a FIFO, a link; nobody's lease can be on it
            st = None
            fixed += 1
        if st is None:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o444))
            made += 1
        elif st.st_uid != 0:
            fixed += 1  # a user made it: a running job's lease on it stays held
        _own(path, 0o444)
    record = directory / leasedir.SETUP_RECORD
    tmp = directory / f".{leasedir.SETUP_RECORD}.tmp"
    tmp.write_text(json.dumps({"time": time.time(), "host": socket.gethostname(),
                               "files": len(names), "slots_per_gpu": slots_per_gpu}) + "\n")
    os.chmod(tmp, 0o444)
    os.replace(tmp, record)
    return made, fixed


def tmpfiles_text(directory: Path, names: list[str]) -> str:
    """Return the systemd-tmpfiles lines that make the directory again at boot."""
    lines = ["# Written by `launch setup`: the lease directory, made again at boot.",
             f"d {directory} 0755 root root -",
             f"d {directory / leasedir.META_DIR} 1777 root root -",
             f"d {directory / leasedir.SWEEPS_DIR} 1777 root root -",
             f"f {directory / leasedir.SETUP_RECORD} 0444 root root -"]
    lines += [f"f {directory / name} 0444 root root -" for name in names]
    return "\n".join(lines) + "\n"


def run_setup(directory: str | None, slots_per_gpu: int | None, tmpfiles: str | None) -> int:
    """Return the exit code of `launch setup`: make the lease directory protected."""
    slots_per_gpu = leasedir.SLOTS_PER_GPU if slots_per_gpu is None else slots_per_gpu
    if os.geteuid() != 0:
        raise UserError("launch setup makes the lease directory root's: run it as root "
                        "(sudo launch setup)")
    if not 1 <= slots_per_gpu <= 256:
        raise UserError(f"--slots-per-gpu takes 1 to 256, not {slots_per_gpu}")
    path = Path(directory or os.environ.get("LAUNCH_LOCK_DIR") or leasedir.DEFAULT_LOCK_DIR)
    try:
        snapshot = nvml.query()
    except nvml.NvmlUnavailable as err:
        print(f"launch: {err}: only CPU tokens are made", file=sys.stderr)
        snapshot = None
    names = wanted_files(snapshot, slots_per_gpu, cpus.machine_cpus())
    made, fixed = make_protected(path, names, slots_per_gpu)
    gpus = len(snapshot.gpus) if snapshot else 0
    span = ports.port_range()
    print(f"{path}: protected; {len(names)} slot files for {gpus} GPUs "
          f"({slots_per_gpu} jobs each at most), {cpus.machine_cpus()} CPUs and rendezvous "
          f"ports {span[0]}-{span[-1]}; {made} made, {fixed} taken over from users")
    target = Path(tmpfiles) if tmpfiles else TMPFILES
    if tmpfiles or target.parent.is_dir():
        target.write_text(tmpfiles_text(path, names))
        print(f"wrote {target}: systemd-tmpfiles makes the directory again at boot")
    else:
        print(f"no {target.parent}: after a reboot clears {path}, run `launch setup` again")
    return 0
