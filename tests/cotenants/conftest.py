"""Fixtures of the co-tenant tests: two real users on one box, its lease directory as chosen.

`shared_box` is the box as it is without the admin: a lease directory of mode 1777 that the
first user of `launch` makes. `protected_box` is the box after `sudo launch setup`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from tenants import Tenant, World, kill_all_of, setup_leases, tenants


@pytest.fixture(scope="session")
def world():
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("the co-tenant tests create two unix users: they need root and useradd "
                    "(CI runs as root)")
    made = World()
    if made.python is None:
        made.close()
        pytest.skip("no Python that the test users may run can import launch (and PyYAML, "
                    "psutil): ours lies where only root can enter, and /usr/bin/python3 is "
                    "missing or too old")
    yield made
    made.close()


@pytest.fixture
def box(world):
    """Return a fresh folder every user can enter; stop whatever the users left in it."""
    path = Path(tempfile.mkdtemp(prefix="box-", dir=world.base))
    path.chmod(0o755)
    yield path
    for name in world.names:
        kill_all_of(name)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shared_box(world, box) -> tuple[Tenant, Tenant]:
    """Alice and Bob, with the lease directory as launch makes it alone (mode 1777)."""
    parent = box / "tmp"  # like /tmp: anyone may make the lease directory here
    parent.mkdir()
    parent.chmod(0o1777)
    return tenants(world, box, parent / "leases")


@pytest.fixture
def protected_box(world, box) -> tuple[Tenant, Tenant]:
    """Alice and Bob, after the admin ran `sudo launch setup` on the lease directory."""
    lock_dir = box / "leases"
    setup_leases(world, lock_dir)
    return tenants(world, box, lock_dir)
