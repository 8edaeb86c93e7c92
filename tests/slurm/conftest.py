"""Fixtures for tests against a real Slurm: the clusters slurm/start-cluster.sh brings up.

Without a cluster the `slurm` tests skip with the reason, except in CI (CI=true), where a
missing cluster is a failure: .ci/run starts both clusters before the tests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

NOACCT_CONF = os.environ.get("LAUNCH_TEST_SLURM_NOACCT_CONF",
                             "/tmp/launch-slurm-noacct/cluster/etc/slurm.conf")


def cluster_problem(env: dict) -> str | None:
    """Return why the cluster that env points at does not answer, or None when it does."""
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T %G"], env=env, capture_output=True,
                              text=True, timeout=15)
    except FileNotFoundError:
        return "no `sinfo` on PATH (slurm/install.sh installs Slurm)"
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    if done.returncode != 0:
        return f"sinfo failed: {done.stderr.strip()[:200]}"
    states = done.stdout.split()
    if not any(s.rstrip("*") in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no usable node (sinfo says {done.stdout.strip()!r})"
    if "gpu:4" not in done.stdout:
        return f"the node has no 4 fake GPUs as GRES (sinfo says {done.stdout.strip()!r})"
    return None


def require(problem: str | None, how: str) -> None:
    """Skip (or, in CI, fail) the test when the cluster has a problem."""
    if problem is None:
        return
    message = f"no Slurm test cluster: {problem}; start it with `{how}`"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def _main_cluster() -> str | None:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    return cluster_problem(env)


@pytest.fixture(scope="session")
def _noacct_cluster() -> str | None:
    if not Path(NOACCT_CONF).is_file():
        return f"{NOACCT_CONF} does not exist"
    return cluster_problem({**os.environ, "SLURM_CONF": NOACCT_CONF})


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """Return a fresh runs directory (so a fresh submitit folder: job ids restart after purges)."""
    root = tmp_path / "runs"
    root.mkdir()
    os.chmod(tmp_path, 0o755)  # jobs run as the submitting user; keep it readable anyway
    monkeypatch.setenv("LAUNCH_RUNS_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture
def cluster(_main_cluster, runs, monkeypatch) -> Path:
    """The main test cluster (accounting through slurmdbd); returns the runs directory."""
    require(_main_cluster, "sudo slurm/start-cluster.sh")
    monkeypatch.delenv("SLURM_CONF", raising=False)
    return runs


@pytest.fixture
def noacct_cluster(_noacct_cluster, runs, monkeypatch) -> Path:
    """The second cluster, accounting_storage/none (no sacct); returns the runs directory."""
    require(_noacct_cluster, "sudo slurm/start-cluster.sh --no-accounting")
    monkeypatch.setenv("SLURM_CONF", NOACCT_CONF)
    return runs
