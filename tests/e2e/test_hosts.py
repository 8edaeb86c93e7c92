"""`launch status --hosts` over real SSH: several loopback sshd, each one "host" (hostlab.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hostlab import FIXTURES, Lab, executable, local_json, silent_port, smi_bin, start_sweep
from sshd import SSHD, free_port

pytestmark = pytest.mark.ssh

ANSWER_TIMEOUT_S = 60  # hosts that do answer get all the time a busy machine needs
SHORT_TIMEOUT_S = 2.0  # --timeout for hosts that never answer
OLD_LAUNCH_SCRIPT = """#!/bin/sh
echo "usage: launch status [-h]" >&2
echo "launch: error: unrecognized arguments: --json" >&2
exit 2
"""


@pytest.fixture
def lab(tmp_path):
    missing = [p for p in (shutil.which("ssh"), shutil.which("ssh-keygen")) if not p]
    if not Path(SSHD).exists() or missing:
        why = "needs openssh-server and openssh-client (/usr/sbin/sshd, ssh, ssh-keygen)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {why} are missing; .ci/run installs them")
        pytest.skip(why)
    hosts = Lab(tmp_path)
    try:
        yield hosts
    finally:
        hosts.stop()


def comparable(status: dict) -> dict:
    """Return what must agree between two looks at one host a moment apart."""
    jobs = [[(j["job_id"], j["state"], j["gpus"]) for j in s["jobs"]] for s in status["sweeps"]]
    return {"gpus": status["gpus"], "cpus": status["cpus"], "user": status["user"],
            "driver_version": status["driver_version"], "nvml_error": status["nvml_error"],
            "sweeps": [(s["sweep_id"], s["counts"], s["supervisor"]) for s in status["sweeps"]],
            "jobs": jobs}


def blocks(text: str) -> dict[str, list[str]]:
    """Return host header -> the lines of its block, from the text view."""
    found: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("=== "):
            lines = found.setdefault(line, [])
        else:
            lines.append(line)
    return found


def stable_lines(lines: list[str]) -> list[str]:
    """Return a status view's lines without the clock: no header time, job rows' id and state."""
    out = []
    for line in lines[1:]:  # the first line holds the time
        out.append(" ".join(line.split()[:2]) if line.startswith("  ") else line.rstrip())
    while out and not out[-1]:
        out.pop()
    return out


def summary_row(text: str, alias: str) -> str:
    """Return a host's summary line after its name, its spaces squeezed."""
    line = next(line for line in text.splitlines() if line.split()[:1] == [alias])
    return " ".join(line.split()[1:])


def test_three_hosts_match_each_hosts_own_status(lab):
    lab.host("idle", "idle4")
    lab.host("busy", "busy4")
    lab.host("mig", "mig")
    sweep_id = start_sweep(lab, "idle")
    done, _ = lab.status("--hosts", "all", "--json", "--timeout", str(ANSWER_TIMEOUT_S))
    assert done.returncode == 0, done.stderr
    answers = {h["host"]: h for h in json.loads(done.stdout)}
    assert list(answers) == ["idle", "busy", "mig"]
    for alias, answer in answers.items():
        own = local_json(lab, alias)
        assert answer["error"] is None and answer["source"] == "launch"
        assert answer["hostname"] == own["host"]
        assert comparable(answer) == comparable(own), alias
        assert set(own) <= set(answer)  # the same keys as local --json, plus ours
    assert answers["idle"]["sweeps"][0]["sweep_id"] == sweep_id
    summaries = {alias: answers[alias]["summary"] for alias in answers}
    # idle4: four idle A100s, one leased by the running job; busy4: only GPU 2 is idle;
    # mig: MIG device 0:1 (13 MiB used) and the whole GPU 1 are free
    assert [summaries[a]["free"] for a in ("idle", "busy", "mig")] == [3, 1, 2]
    assert summaries["idle"]["jobs"] == [1, 1, 0] and summaries["busy"]["jobs"] == [0, 0, 0]
    me = answers["busy"]["user"]
    others = {p["pid"] for g in answers["busy"]["gpus"] for p in g["processes"]
              if p["user"] != me}
    assert summaries["busy"]["others_processes"] == len(others) == 5 - (me == "root")

    text, _ = lab.status("--hosts", "all", "--timeout", str(ANSWER_TIMEOUT_S))
    assert text.returncode == 0, text.stderr
    # free memory: what every GPU has free, used or not (the busy box's four: 252.5 GiB)
    free_gib = sum(g["memory_free_bytes"] for g in answers["busy"]["gpus"]) / 2**30
    assert summary_row(text.stdout, "idle").startswith("3/4 317.9 GiB 0 1/1/0 3/4 A100-SXM4")
    busy = f"1/4 {free_gib:.1f} GiB {len(others)} 0/0/0 1/4 H100"
    assert summary_row(text.stdout, "busy").startswith(busy)
    assert summary_row(text.stdout, "mig").endswith("1/3 A100-SXM4-40GB MIG, 1/1 A100-SXM4-40GB")
    shown = blocks(text.stdout)
    assert list(shown) == ["=== idle ===", "=== busy ===", "=== mig ==="]
    for alias in answers:
        here = lab.local(alias, "status")
        assert here.returncode == 0, here.stderr
        assert stable_lines(shown[f"=== {alias} ==="]) == stable_lines(here.stdout.splitlines())


def test_a_host_without_launch_shows_what_nvidia_smi_says(lab):
    sleeper = subprocess.Popen(["sleep", "300"])
    lab.closers.append(sleeper.kill)
    smi = smi_bin(lab, sleeper.pid)
    lab.host("ned", path=[smi])  # no launch on its PATH
    old = lab.root / "old-bin"
    old.mkdir()
    executable(old / "launch", OLD_LAUNCH_SCRIPT)
    lab.host("myrtle", path=[old, smi])  # a launch of another version
    done, _ = lab.status("--hosts", "ned,myrtle", "--timeout", str(ANSWER_TIMEOUT_S))
    assert done.returncode == 0, done.stderr
    shown = blocks(done.stdout)
    ned = ("=== ned: nvidia-smi's view (launch not found: install it there or set "
           "hosts.ned.command) ===")
    myrtle = ("=== myrtle: nvidia-smi's view (launch there said: launch: error: "
              "unrecognized arguments: --json) ===")
    assert list(shown) == [ned, myrtle], done.stdout
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    lines = shown[ned]
    assert lines[1].startswith("[0] NVIDIA H100 80GB HBM3 |")
    assert f"41506 / 81559 MiB | {me}(40960M)" in lines[1]  # the owner ps gave for the PID
    assert lines[2].endswith("3078 / 81559 MiB | ?(2560M) ?(512M)")  # PIDs not on this host
    assert "sweeps: not known (no launch there to ask)" in lines
    row = summary_row(done.stdout, "ned").split()
    assert row[0] == "1/4" and row[4] == "?", row  # GPU 2 alone is free; sweeps not known
    assert summary_row(done.stdout, "ned").endswith("1/4 H100 80GB HBM3 (from nvidia-smi)")
    as_json, _ = lab.status("--hosts", "ned", "--json", "--timeout", str(ANSWER_TIMEOUT_S))
    host = json.loads(as_json.stdout)[0]
    assert (host["source"], host["error"]) == ("nvidia-smi", None)
    assert host["fallback_reason"].startswith("launch not found")
    assert [g["memory_used_bytes"] // 2**20 for g in host["gpus"]] == [41506, 3078, 0, 20992]


def test_hosts_that_do_not_answer_say_why_within_the_timeout(lab):
    lab.host("athena", "idle4")  # its key is the one the dead hosts are asked with
    lab.port("closed", free_port())
    lab.port("silent", silent_port(lab))
    stranger = lab.root / "stranger"  # a key athena's sshd does not know
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True, stdin=subprocess.DEVNULL)
    lab.port("denied", lab.ports["athena"][0], stranger)
    done, ended_s = lab.status("--hosts", "closed,silent,denied,nosuchhost.invalid",
                               "--timeout", str(SHORT_TIMEOUT_S))
    assert done.returncode == 1, done.stderr
    assert summary_row(done.stdout, "closed") == \
        "unreachable: connection refused (no ssh server on that port)"
    assert summary_row(done.stdout, "silent") == "unreachable: timeout after 2 s"
    assert summary_row(done.stdout, "denied") == "unreachable: Permission denied (publickey)"
    assert summary_row(done.stdout, "nosuchhost.invalid") == "unreachable: host unknown"
    # the requirement itself: the whole command, start to end, within the timeout plus 1 s
    assert ended_s < SHORT_TIMEOUT_S + 1.0, ended_s


def test_pick_chooses_the_host_with_the_most_free_gpus(lab):
    lab.host("busy", "busy4")
    lab.host("mig", "mig")
    lab.host("idle", "idle4")
    done, _ = lab.status("--hosts", "busy,mig,idle", "--pick", "2",
                         "--timeout", str(ANSWER_TIMEOUT_S))
    assert (done.returncode, done.stdout) == (0, "idle\n"), done.stderr
    listed, _ = lab.status("--hosts", "all", "--free", "2", "--timeout", str(ANSWER_TIMEOUT_S))
    assert listed.returncode == 0, listed.stderr
    assert [h.split()[1] for h in blocks(listed.stdout)] == ["idle", "mig"]
    none, _ = lab.status("--hosts", "busy", "--pick", "2", "--timeout", str(ANSWER_TIMEOUT_S))
    assert (none.returncode, none.stdout) == (1, "")
    assert "no host has 2 free GPUs (asked busy)" in none.stderr


def test_watch_asks_every_host_again_each_round(lab, monkeypatch, capsys):
    from launcher.commands.status_hosts import run_hosts_status

    machine = lab.root / "athena.json"
    shutil.copy(FIXTURES / "nvml" / "idle4.json", machine)
    lab.host("athena", machine)
    lab.port("closed", free_port())
    monkeypatch.setenv("LAUNCH_CONFIG", str(lab.config()))
    rounds = []

    def sleep(seconds: float) -> None:  # the loop's clock; the second pause is the Ctrl-C
        rounds.append(seconds)
        shutil.copy(FIXTURES / "nvml" / "busy4.json", machine)  # the host's GPUs change
        if len(rounds) == 2:
            raise KeyboardInterrupt

    assert run_hosts_status("athena,closed", timeout_s=ANSWER_TIMEOUT_S, watch_s=7.0,
                            sleep=sleep) == 0
    out = capsys.readouterr().out
    first, second = out.split("=== athena ===\n")[1:]
    assert rounds == [7.0, 7.0]
    assert "A100-SXM4-80GB" in first and "H100 80GB HBM3" in second  # asked again
    assert out.count("closed  unreachable: connection refused") == 2
