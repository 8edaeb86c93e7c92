"""Over real SSH: a sweep started with --detach outlives its connection.

A real sshd listens on a free loopback port with keys generated for the test. One connection
runs `launch sweep configs/demo.yaml --detach` and closes; later connections watch
`launch status --json` report the sweep running, then every job finished. sshd forwards no
environment, so the run, lock and snapshot locations travel in the remote command line.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sshd import SSHD, LoopbackSshd, start_sshd

pytestmark = pytest.mark.ssh

REPO = Path(__file__).resolve().parents[2]
LAUNCH = Path(sys.executable).with_name("launch")  # the venv's console script
# The demo made tiny: its three kinds of job, one seed, one epoch on a few hundred images.
DEMO_OVERRIDES = ["job.epochs=1", "job.max_train_samples=256", "job.max_val_samples=128",
                  "job.max_test_samples=128", "seeds=1"]
DETACH_TIMEOUT_S = 60.0  # the first connection must come back at once, not when the sweep ends
RUNNING_TIMEOUT_S = 60.0
FINISHED_TIMEOUT_S = 150.0
POLL_S = 1.0
NO_GPU_SNAPSHOT = {
    "format": "launch-nvml-snapshot/1", "host": "e2e-ssh", "driver_version": "565.57.01",
    "cuda_driver_version": 12070, "init_error": None, "devices": [], "processes": {},
}


@pytest.fixture
def sshd(tmp_path):
    """A running loopback sshd, stopped through its pid file whatever the test's outcome."""
    missing = [p for p in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen")) if not p]
    if not Path(SSHD).exists() or missing:
        why = "needs openssh-server and openssh-client (/usr/sbin/sshd, ssh, ssh-keygen)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {why} are missing; .ci/run installs them")
        pytest.skip(why)
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def env(tmp_path):
    """The run, lock and snapshot locations for the remote commands; stray sweeps are stopped."""
    snapshot = tmp_path / "no-gpu.json"
    snapshot.write_text(json.dumps(NO_GPU_SNAPSHOT))
    (tmp_path / "locks").mkdir(mode=0o1777)
    values = {"LAUNCH_RUNS_DIR": str(tmp_path / "runs"), "LAUNCH_LOCK_DIR": str(tmp_path / "locks"),
              "LAUNCH_NVML_SNAPSHOT": str(snapshot), "LAUNCH_DATA": str(tmp_path / "data")}
    try:
        yield values
    finally:
        stop_stray_processes(tmp_path / "runs")


def stop_stray_processes(runs: Path) -> None:
    """Stop supervisors and jobs this test started that still run (a failed test leaves them)."""
    procs = []
    for path in [*runs.glob("*/supervisor.json"), *runs.glob("*/jobs/*/state.json")]:
        info = json.loads(path.read_text() or "{}")
        started = info.get("create_time", info.get("pid_create_time"))
        try:
            proc = psutil.Process(info["pid"])
            if started is not None and abs(proc.create_time() - started) < 1.0:
                procs += [proc, *proc.children(recursive=True)]
        except (KeyError, TypeError, psutil.NoSuchProcess):
            continue
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def remote(argv: list[str], env: dict[str, str]) -> str:
    """Return a shell command line for sshd's login shell: cd to the repo, set env, run argv."""
    assignments = [f"{k}={v}" for k, v in env.items()]
    return f"cd {shlex.quote(str(REPO))} && " + shlex.join(["env", *assignments, *argv])


def ssh_ok(server: LoopbackSshd, command: str, timeout_s: float = 60.0) -> str:
    """Return the stdout of a remote command that must succeed; fail with everything if not."""
    try:
        done = server.run(command, timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ssh did not return within {timeout_s:.0f} s: {command}")
    if done.returncode != 0:
        pytest.fail(f"ssh exit {done.returncode}: {command}\nstdout:\n{done.stdout}\n"
                    f"stderr:\n{done.stderr}\nsshd log:\n{server.log()[-3000:]}")
    return done.stdout


def job_states(server: LoopbackSshd, env: dict[str, str], sweep_id: str) -> dict[str, str]:
    """Return {job id: state} of one sweep, as `launch status --json` reports it over SSH."""
    out = ssh_ok(server, remote([str(LAUNCH), "status", "--json"], env))
    sweeps = [s for s in json.loads(out)["sweeps"] if s["sweep_id"] == sweep_id]
    assert sweeps, f"launch status --json does not list {sweep_id}:\n{out}"
    return {j.get("job_id", j.get("id")): j["state"] for j in sweeps[0]["jobs"]}


def sweep_report(runs: Path, sweep_id: str) -> str:
    """Return the supervisor log and each unfinished job's log tail, for a failure message."""
    sweep = runs / sweep_id
    parts = [f"supervisor.log:\n{read_text(sweep / 'supervisor.log')}"]
    for job in sorted((sweep / "jobs").glob("*")):
        state = json.loads(read_text(job / "state.json") or '{"state": "pending"}')["state"]
        if state != "finished":
            tail = read_text(job / "stdout.log")[-1500:]
            parts.append(f"{job.name} ({state}) stdout.log:\n{tail}")
    return "\n".join(parts)


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for(server, env, sweep_id, want, timeout_s: float, what: str) -> dict[str, str]:
    """Return the job states once want(states) holds; fail with the sweep's logs on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = job_states(server, env, sweep_id)
        if want(states):
            return states
        broken = {j: s for j, s in states.items() if s in ("failed", "cancelled", "timeout")}
        if broken or time.monotonic() > deadline:
            why = f"jobs ended badly: {broken}" if broken else f"not {what} after {timeout_s:.0f} s"
            pytest.fail(f"sweep {sweep_id}: {why}; states {states}\n"
                        + sweep_report(Path(env["LAUNCH_RUNS_DIR"]), sweep_id))
        time.sleep(POLL_S)


def test_ssh_harness_runs_the_venv_launch(sshd):
    """The loopback server lets us in, and the venv's launch runs in the remote login shell."""
    out = ssh_ok(sshd, remote([sys.executable, "-c", "import os; print(os.getcwd())"], {}))
    assert out.strip() == str(REPO)
    assert "sweep" in ssh_ok(sshd, remote([str(LAUNCH), "--help"], {"A": "a b;$(x)"}))
    quoted = ssh_ok(sshd, remote([sys.executable, "-c", "import os; print(os.environ['A'])"],
                                 {"A": "a b; echo $(id) 'q'"}))
    assert quoted == "a b; echo $(id) 'q'\n"  # data, never code


def test_detached_sweep_outlives_the_connection(sshd, env):
    runs = Path(env["LAUNCH_RUNS_DIR"])
    start = remote([str(LAUNCH), "sweep", "configs/demo.yaml", *DEMO_OVERRIDES, "--detach"], env)
    out = ssh_ok(sshd, start, timeout_s=DETACH_TIMEOUT_S)  # returns: the connection is closed
    sweep_id = out.splitlines()[0].strip()
    assert (runs / sweep_id / "sweep.json").is_file(), f"--detach printed {out!r}"
    first = wait_for(sshd, env, sweep_id, lambda s: "running" in s.values() or all(
        v == "finished" for v in s.values()), RUNNING_TIMEOUT_S, "running")
    assert "running" in first.values(), f"status never showed {sweep_id} running: {first}"
    final = wait_for(sshd, env, sweep_id, lambda s: all(v == "finished" for v in s.values()),
                     FINISHED_TIMEOUT_S, "finished")
    assert final and set(final.values()) == {"finished"}
    table = json.loads(ssh_ok(sshd, remote([str(LAUNCH), "results", sweep_id, "--json"], env)))
    assert table["finished"] == len(final)
    assert all(j["test_accuracy"] is not None for j in table["jobs"])
    # following the log of a sweep whose jobs all ended returns once the supervisor is gone
    log = ssh_ok(sshd, remote([str(LAUNCH), "logs", sweep_id, "-f"], env), timeout_s=30)
    assert "sweep ended" in log, log
