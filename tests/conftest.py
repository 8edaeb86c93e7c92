"""Fixtures every test folder shares: a private runs directory, lease directory and machine.

Each test gets its own $LAUNCH_RUNS_DIR, $LAUNCH_LOCK_DIR, $XDG_STATE_HOME (the index of
sweeps) and $XDG_CACHE_HOME (the checked house rules) under tmp_path, so tests never see
each other's sweeps or leases (nor the user's), and the working directory is tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from snapshots import NVML_FIXTURES


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """Return a fresh runs directory ($LAUNCH_RUNS_DIR); the working directory is tmp_path."""
    root = tmp_path / "runs"
    monkeypatch.setenv("LAUNCH_RUNS_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch) -> Path:
    """Return a fresh lease directory ($LAUNCH_LOCK_DIR), not made yet.

    Every test has its own: the machine's lease directory (leases, CPU tokens, sweep ids)
    is never touched by a test.
    """
    path = tmp_path / "leases"
    monkeypatch.setenv("LAUNCH_LOCK_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def state_home(tmp_path, monkeypatch) -> Path:
    """Return a fresh $XDG_STATE_HOME: the per-user index of sweeps (launcher/rundir/index.py)
    of every test is its own, and no test writes into the real home."""
    path = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(path))
    # and the cache of checked house rules (launcher/config/rulescache.py) likewise
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return path


@pytest.fixture
def lab(tmp_path, runs, lock_dir, monkeypatch) -> Path:
    """Return tmp_path: private runs and lease directories, and the idle 4-GPU box as GPUs."""
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(NVML_FIXTURES / "idle4.json"))
    return tmp_path
