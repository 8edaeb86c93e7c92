"""Loopback "hosts" for the --hosts tests: sshd per host, the ssh config, launch run here.

Each host is its own sshd with generated keys and its own environment (NVML snapshot, run
and lease directories, PATH) from a profile its sessions source (sshd.start_host). The
client side is what a user has: an ~/.ssh/config-style file with one alias per host and the
settings file of launcher/config/userconfig.py naming it, read through $LAUNCH_CONFIG.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from sshd import LoopbackSshd, start_host, write_ssh_config

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
RUN_TIMEOUT_S = 120
LAUNCH_SCRIPT = """#!/bin/sh
PYTHONPATH={repo} exec {python} -m launcher.cli "$@"
"""


def executable(path: Path, text: str) -> Path:
    """Return path, written with text and made executable."""
    path.write_text(text)
    path.chmod(0o755)
    return path


class Lab:
    """Hosts on loopback, the ssh config and settings file naming them, and `launch` here."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"  # the `launch` every host with launch has on its PATH
        self.bin.mkdir()
        executable(self.bin / "launch", LAUNCH_SCRIPT.format(repo=REPO, python=sys.executable))
        self.servers: list[LoopbackSshd] = []
        self.ports: dict[str, tuple[int, Path]] = {}
        self.envs: dict[str, dict[str, str]] = {}
        self.settings: dict[str, dict] = {}
        self.closers: list = []

    def host(self, alias: str, snapshot: str | Path | None = None,
             path: list[Path] | None = None, **settings) -> dict[str, str]:
        """Start one host (snapshot: a fixture's name, or a file); return its environment."""
        folder = self.root / alias
        (folder / "locks").mkdir(parents=True, mode=0o1777)
        env = {"PATH": ":".join(map(str, [*(path or [self.bin]), "/usr/bin", "/bin"])),
               "LAUNCH_RUNS_DIR": str(folder / "runs"), "LAUNCH_LOCK_DIR": str(folder / "locks"),
               # each host is a machine of its own: its own index of the user's sweeps
               "XDG_STATE_HOME": str(folder / "state")}
        if isinstance(snapshot, str):
            snapshot = FIXTURES / "nvml" / f"{snapshot}.json"
        if snapshot:
            env["LAUNCH_NVML_SNAPSHOT"] = str(snapshot)
        server = start_host(folder / "sshd", env)
        self.servers.append(server)
        self.ports[alias] = (server.port, server.key)
        self.envs[alias], self.settings[alias] = env, settings
        return env

    def port(self, alias: str, port: int, key: Path | None = None) -> None:
        """Name a port as a host: one that is no ssh server, or a server with a key it refuses."""
        self.ports[alias] = (port, key or self.servers[0].key)
        self.settings[alias] = {}

    def config(self) -> Path:
        """Return the settings file naming every host, with the ssh config beside it."""
        user = self.servers[0].user
        ssh_config = write_ssh_config(self.root / "ssh_config", self.ports, user)
        path = self.root / "config.yaml"
        path.write_text(yaml.safe_dump({"ssh_config": str(ssh_config), "hosts": self.settings},
                                   sort_keys=False))
        return path

    def status(self, *args: str, timeout_s: float = RUN_TIMEOUT_S) -> tuple[
            subprocess.CompletedProcess, float]:
        """Return `launch status ARGS` run here, and the seconds from its start to its end."""
        env = {**os.environ, "PYTHONPATH": str(REPO), "LAUNCH_CONFIG": str(self.config())}
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "status", *args],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=timeout_s)
        ended_s = time.monotonic() - start
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), ended_s

    def local(self, alias: str, *argv: str) -> subprocess.CompletedProcess:
        """Return `launch ARGV` run here in a host's environment, as that host runs it."""
        env = {**os.environ, **self.envs[alias], "PATH": os.environ["PATH"],
               "PYTHONPATH": str(REPO)}
        return subprocess.run([sys.executable, "-m", "launcher.cli", *argv], env=env,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              cwd=self.root)

    def stop(self) -> None:
        for close in self.closers:
            close()
        for server in self.servers:
            server.stop()


def start_sweep(lab: Lab, alias: str) -> str:
    """Start a two-job sweep on a host (one job runs, one waits for CPUs); return its id."""
    sweep = lab.root / "hold.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "hold", "grid": {"seed": [0, 1]},
        "job": {"command": [sys.executable, "-c", "import time; time.sleep(300)", "{seed}"]},
        "resources": {"gpus_per_job": 1, "cpus_per_job": 1, "cpu_budget": 1}}))
    done = lab.local(alias, "sweep", str(sweep), "--detach")
    assert done.returncode == 0, done.stderr
    sweep_id = done.stdout.strip().splitlines()[-1]
    lab.closers.append(lambda: lab.local(alias, "cancel", sweep_id, "--grace", "1"))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:  # the event: one job running, the other waiting
        states = sorted(j["state"] for s in local_json(lab, alias)["sweeps"] for j in s["jobs"])
        if states == ["running", "waiting"]:
            return sweep_id
        time.sleep(0.2)
    pytest.fail(f"sweep {sweep_id} never had a job running and one waiting: {states}")


def local_json(lab: Lab, alias: str) -> dict:
    done = lab.local(alias, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def smi_bin(lab: Lab, live_pid: int) -> Path:
    """Return a folder holding the fake nvidia-smi, its first process made a live PID of ours."""
    folder = lab.root / "smi-bin"
    folder.mkdir()
    for name in ("nvidia-smi", "query-gpu.csv", "query-compute-apps.csv"):
        shutil.copy2(FIXTURES / "nvidia-smi" / name, folder / name)
    apps = folder / "query-compute-apps.csv"
    apps.write_text(apps.read_text().replace(", 48213, ", f", {live_pid}, ", 1))
    return folder


def silent_port(lab: Lab) -> int:
    """Return a loopback port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=accept, daemon=True).start()

    def close() -> None:
        listener.close()
        for conn in held:
            conn.close()

    lab.closers.append(close)
    return listener.getsockname()[1]
