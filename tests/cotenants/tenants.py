"""Real unix users sharing one box, for the co-tenant tests: made by the tests, removed after.

Creating users needs root (CI runs as root); elsewhere every test here is skipped with the
reason. Each user runs `launch` as a process of its own uid, with the checkout's code copied
into a folder every user can read (the checkout may lie under a folder only root enters), a
home of its own (runs directory and state) and the lease directory the test chooses. The
GPUs are the idle 4-GPU box of the NVML fixtures, the same for everyone.

The test itself stays root: it reads every user's files, opens gates and kills what a test
left behind.
"""

from __future__ import annotations

import compileall
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import waiting
import yaml

from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import ENDED_STATES
from launcher.show.views import SweepView, load_sweep_view

TESTS = Path(__file__).parents[1]
REPO = TESTS.parent
NVML_IDLE4 = TESTS / "fixtures" / "nvml" / "idle4.json"
JOB_SCRIPTS = ("fake_job.py", "leaver_job.py")
THIRD_PARTY = ("yaml", "_yaml", "psutil", "pynvml")  # what `launch` imports beside itself
PREFIX = "lt-"  # of the users the tests make: lt-alice-<hex>, lt-bob-<hex>
WAIT_S = 600  # a bound on waits for events, so a broken test fails instead of hanging

def _copy_code(into: Path) -> Path:
    """Copy launch's packages and the modules it imports into `into`; return the folder."""
    code = into / "code"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("launcher", "jobs"):
        shutil.copytree(REPO / package, code / package, ignore=skip)
    for name in THIRD_PARTY:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, code / name, ignore=skip)
        else:
            shutil.copy2(origin, code / origin.name)
    compileall.compile_dir(str(code), quiet=1)  # users cannot write __pycache__ here
    return code


def _add_user(name: str) -> None:
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/bin/sh", name],
                   check=True, capture_output=True)


def kill_all_of(name: str) -> None:
    """SIGKILL every process of the user and wait until none is left (zombies of ours reaped)."""
    uid = pwd.getpwnam(name).pw_uid
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        alive = []
        for proc in psutil.process_iter(["uids", "status"]):
            try:
                if proc.info["uids"].real == uid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    proc.kill()
                    alive.append(proc)
            except psutil.Error:
                continue
        while True:  # the tests' own children (Popen) of the user end as our zombies
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not alive:
            return
        psutil.wait_procs(alive, timeout=1)


def _remove_user(name: str) -> None:
    kill_all_of(name)
    subprocess.run(["userdel", name], capture_output=True)


class World:
    """What every co-tenant test shares: the users, the code they run, and a base folder."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="launch-cotenants-", dir="/tmp"))
        self.base.chmod(0o755)
        self.code = _copy_code(self.base)
        self.jobs = self.base / "jobs"
        self.jobs.mkdir()
        for script in JOB_SCRIPTS:
            shutil.copy2(TESTS / "launcher" / script, self.jobs / script)
        self.snapshot = self.base / "idle4.json"
        shutil.copy2(NVML_IDLE4, self.snapshot)
        tag = secrets.token_hex(2)
        self.names = [f"{PREFIX}alice-{tag}", f"{PREFIX}bob-{tag}"]
        for name in self.names:
            _add_user(name)
        self.python = self._interpreter()

    def _interpreter(self) -> str | None:
        """Return a Python the users can run `launch` with (ours may lie in root's home)."""
        uid = pwd.getpwnam(self.names[0]).pw_uid
        for python in (os.path.realpath(sys.executable), "/usr/bin/python3",
                       "/usr/local/bin/python3"):
            try:
                done = subprocess.run([python, "-c", "import launcher.cli, yaml, psutil"],
                                      user=uid, env={"PYTHONPATH": str(self.code)},
                                      cwd=self.base, capture_output=True, timeout=WAIT_S)
            except OSError:
                continue
            if done.returncode == 0:
                return python
        return None

    def close(self) -> None:
        for name in self.names:
            _remove_user(name)
        shutil.rmtree(self.base, ignore_errors=True)


class Tenant:
    """One user of the box: runs `launch` and jobs as its own uid, from its own home."""

    def __init__(self, world: World, name: str, box: Path, lock_dir: Path,
                 runs: Path | None = None) -> None:
        entry = pwd.getpwnam(name)
        self.world, self.name, self.uid, self.gid = world, name, entry.pw_uid, entry.pw_gid
        self.short = name.split("-")[1]  # alice, bob: for messages
        self.home = box / self.short
        self.home.mkdir()
        os.chown(self.home, self.uid, self.gid)
        self.home.chmod(0o755)
        self.lock_dir = lock_dir
        self.runs = runs or self.home / "runs"

    def env(self, **extra: str) -> dict[str, str]:
        """Return the environment the user's commands run with."""
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home),
                "USER": self.name, "LOGNAME": self.name, "LANG": "C.UTF-8",
                "PYTHONPATH": str(self.world.code), "PYTHONDONTWRITEBYTECODE": "1",
                "LAUNCH_LOCK_DIR": str(self.lock_dir), "LAUNCH_RUNS_DIR": str(self.runs),
                "XDG_STATE_HOME": str(self.home / "state"),
                "LAUNCH_NVML_SNAPSHOT": str(self.world.snapshot), **extra}

    def run(self, argv: list[str], **env: str) -> subprocess.CompletedProcess:
        """Run argv as this user, in its home; return what it did."""
        return subprocess.run(argv, user=self.uid, group=self.gid, extra_groups=[],
                              env=self.env(**env), cwd=self.home, capture_output=True,
                              text=True, timeout=WAIT_S)

    def popen(self, argv: list[str], **env: str) -> subprocess.Popen:
        """Start argv as this user, in its home."""
        return subprocess.Popen(argv, user=self.uid, group=self.gid, extra_groups=[],
                                env=self.env(**env), cwd=self.home,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sh(self, script: str) -> subprocess.CompletedProcess:
        """Run a shell script as this user (what a co-tenant types)."""
        return self.run(["/bin/sh", "-c", script])

    def launch(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """Run `launch ARGS...` as this user."""
        return self.run([self.world.python, "-m", "launcher.cli", *args], **env)

    def sweep_file(self, name: str, grid: dict, resources: dict, **job: Any) -> Path:
        """Write a sweep of fake jobs (tests/launcher/fake_job.py) into the home; its path."""
        spec = {"command": [self.world.python, str(self.world.jobs / "fake_job.py"),
                            "{behaviour}", "{seconds}", *(["{gate}"] if "gate" in job else [])],
                "behaviour": "ok", "seconds": 0.05, "seed": 0, "seed_from_env": True, **job}
        path = self.home / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "job": spec, "grid": grid,
                                        "resources": resources}))
        os.chown(path, self.uid, self.gid)
        return path

    def start(self, path: Path, *args: str) -> str:
        """Start a sweep detached as this user; return its id."""
        done = self.launch("sweep", str(path), *args, "--detach")
        assert done.returncode == 0, f"{self.short}: {done.stderr}"
        return done.stdout.strip().splitlines()[-1]

    def paths(self, sweep_id: str) -> SweepPaths:
        return SweepPaths.of(sweep_id, self.runs)

    def view(self, sweep_id: str) -> SweepView:
        """What status shows of one of this user's sweeps (read by the test, as root)."""
        return load_sweep_view(self.paths(sweep_id))

    def wait_ended(self, sweep_id: str) -> SweepView:
        """Wait until every job of the sweep ended and its supervisor is gone."""
        return wait_for(f"{self.short}'s sweep {sweep_id} to end", lambda: self._ended(sweep_id),
                        self.paths(sweep_id).root / "supervisor.log")

    def _ended(self, sweep_id: str) -> SweepView | None:
        view = self.view(sweep_id)
        done = all(j.state in ENDED_STATES for j in view.jobs) and view.supervisor != "running"
        return view if done else None

    def runs_of(self, sweep_id: str) -> list[dict]:
        """Every run every job of the sweep recorded (fake_job.py: runs.jsonl), by start."""
        out = []
        for job in self.paths(sweep_id).jobs_dir.iterdir():
            path = job / "runs.jsonl"
            if path.exists():
                out += [{**json.loads(line), "job": job.name, "user": self.short}
                        for line in path.read_text().splitlines() if line]
        return sorted(out, key=lambda r: r["start"])


def wait_for(what: str, check, log: Path | None = None) -> Any:
    """Return check()'s first true answer (tests/waiting.py), within WAIT_S."""
    return waiting.wait_for(what, check, WAIT_S, log=log)


def shared_overlaps(runs: list[dict]) -> list[tuple[dict, dict]]:
    """Return the pairs of runs that held one GPU at the same time."""
    out = []
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            if a["cuda"] and set(a["cuda"].split(",")) & set(b["cuda"].split(",")) and \
                    a["start"] < b["end"] and b["start"] < a["end"]:
                out.append((a, b))
    return out


def tenants(world: World, box: Path, lock_dir: Path,
            runs: Path | None = None) -> tuple[Tenant, Tenant]:
    """Return Alice and Bob in `box`, sharing lock_dir (and runs, if given)."""
    alice, bob = (Tenant(world, name, box, lock_dir, runs) for name in world.names)
    return alice, bob


def setup_leases(world: World, lock_dir: Path) -> subprocess.CompletedProcess:
    """Run `launch setup` as root on lock_dir (tmpfiles lines beside it, not in /etc)."""
    env = {**os.environ, "PYTHONPATH": str(world.code), "LAUNCH_NVML_SNAPSHOT":
           str(world.snapshot)}
    done = subprocess.run([sys.executable, "-m", "launcher.cli", "setup", "--dir", str(lock_dir),
                           "--slots-per-gpu", "4", "--tmpfiles",
                           str(lock_dir.parent / "tmpfiles.conf")],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done
