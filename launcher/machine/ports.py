"""Rendezvous ports: a MASTER_PORT no other job on the machine holds, leased like a GPU slot.

Two jobs of several GPUs on one box that both let torchrun pick its default port meet on the
same one and break each other. A job of several GPUs holds a `port.<n>` slot file of the
lease directory (LOCK_EX) for its whole life, so no job of any user of this tool gets the same
port meanwhile, and the kernel frees it when the job is gone. `sudo launch setup` makes the
files root's in advance, like every other slot file (launcher/commands/setup.py).

A port something else listens on (a server of a colleague, a hand-started torchrun) is
skipped: the port is bound once, briefly, before it is handed on.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from launcher.machine import leases

# Above torchrun's default 29500, which jobs started by hand take when told nothing.
FIRST_PORT = 29510
PORTS = 256
PORTS_ENV = "LAUNCH_PORTS"  # "FIRST-LAST": another range (tests, a box with a firewall rule)


def port_range() -> range:
    """Return the ports jobs may be given: $LAUNCH_PORTS ("FIRST-LAST") or the default."""
    raw = os.environ.get(PORTS_ENV, "")
    first, _, last = raw.partition("-")
    try:
        low, high = int(first), int(last)
    except ValueError:
        return range(FIRST_PORT, FIRST_PORT + PORTS)
    if not 1024 <= low <= high <= 65535:
        return range(FIRST_PORT, FIRST_PORT + PORTS)
    return range(low, high + 1)


def port_path(directory: Path, port: int) -> Path:
    """Return the slot file of one port."""
    return Path(directory) / f"port.{port}"


def slot_names() -> list[str]:
    """Return the names of the port slot files `launch setup` makes."""
    return [port_path(Path("."), port).name for port in port_range()]


def port_free(port: int) -> bool:
    """Return whether nothing listens on the port now (a bind on every address succeeds)."""
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here: nothing can listen on it either
        try:
            # As a server sets it: a connection of the last job still in TIME_WAIT must not
            # make a port look taken; a socket that listens still does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
        except OSError:
            return False
        finally:
            sock.close()
    return True


def acquire_port(meta: Mapping[str, Any], directory: Path,
                 skip: Collection[Path] = ()) -> leases.Lease | None:
    """Return a lease on a port nobody holds and nothing listens on, or None if none is.

    Slot files in skip (our own running jobs') are not tried; a slot file that cannot be a
    lease (planted) is passed over, as a GPU's is.
    """
    for port in port_range():
        path = port_path(directory, port)
        if path in skip:
            continue
        try:
            lease = leases.try_lock_slot(path, {**meta, "port": port})
        except leases.Unusable:
            continue
        if lease is None:
            continue
        if port_free(port):
            return lease
        lease.release()
    return None


def port_of(lease: leases.Lease) -> int:
    """Return the port a port lease is for."""
    return int(lease.path.name.rpartition(".")[2])
