"""The --hosts view from hosts' answers: each host's JSON read back, summaries, order, golden.

Regenerate the golden files after an intended change of output with
    LAUNCH_UPDATE_GOLDEN=1 pytest tests/launcher/test_hosts_view.py
and read the diff before committing it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_status import ALL, GOLDEN, NOW, check_golden, utc  # noqa: F401 (utc: a fixture)

from launcher.config.userconfig import HostSettings
from launcher.hosts.fanout import Reply
from launcher.hosts.probe import read_reply, remote_script
from launcher.show.hosts_render import hosts_json, render_hosts
from launcher.show.hosts_view import HostReport, best_first, records, summarize
from launcher.show.status_render import render_status

SMI = Path(__file__).parents[1] / "fixtures" / "nvidia-smi"


def answered(name: str, host: str | None = None, user: str = "carol") -> HostReport:
    """Return the report of a host that answered with the golden status JSON of a fixture."""
    status = json.loads((GOLDEN / f"{name}.json").read_text())
    return HostReport(host or name, {**status, "user": user}, None, "launch")


def fallback(tmp_path: Path, command: str = "launch") -> HostReport:
    """Return the report the remote script gives on a host whose PATH has no launch."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("nvidia-smi", "query-gpu.csv", "query-compute-apps.csv"):
        (bin_dir / name).write_bytes((SMI / name).read_bytes())
    (bin_dir / "nvidia-smi").chmod(0o755)
    done = subprocess.run(["sh", "-s"], input=remote_script(command), capture_output=True,
                          text=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=60)
    return read_reply(HostSettings("ned", command), Reply(done.returncode, done.stdout,
                                                          done.stderr), 5.0, NOW)


@pytest.mark.parametrize("name", ALL)
def test_a_hosts_json_renders_as_plain_status_renders_on_it(name, utc):  # noqa: F811
    found = records(json.loads((GOLDEN / f"{name}.json").read_text()))
    status = json.loads((GOLDEN / f"{name}.json").read_text())
    text = render_status(found.snapshot, found.leases, found.sweeps, status["time"],
                         status["nvml_error"], status["host"], cpu_use=found.cpu_use)
    assert text == (GOLDEN / f"{name}.txt").read_text()


def test_summaries_count_free_gpus_others_processes_and_this_users_jobs():
    busy = summarize(answered("busy4"))
    # GPU 2 alone is idle; alice, bob, root and an unknown owner are others (carol is us);
    # carol's sweeps: 2 running, 1 waiting + 8 pending, 1 failed
    assert (busy.free, busy.total, busy.others_processes) == (1, 4, 4)
    assert busy.jobs == (2, 9, 1) and busy.sweeps == 3
    mig = summarize(answered("mig"))
    assert mig.by_model == (("A100-SXM4-40GB MIG", 0, 3), ("A100-SXM4-40GB", 0, 1))  # leased
    assert summarize(HostReport("x", None, "timeout after 5 s")) is None
    nodriver = summarize(answered("nodriver"))
    assert (nodriver.free, nodriver.total) == (0, 0)


def test_best_first_orders_by_free_gpus_then_free_memory_then_as_given():
    reports = [answered("busy4", "a"), answered("idle4", "b"), answered("eight", "c"),
               answered("idle4", "d"), HostReport("e", None, "host unknown")]
    free = {r.host: summarize(r).free for r in reports[:4]}
    ranked = [r.host for r, _ in best_first(reports, 2)]
    assert ranked == sorted([h for h in free if free[h] >= 2], key=lambda h: -free[h])
    assert ranked.index("b") < ranked.index("d")  # a tie keeps the given order
    assert best_first(reports, 99) == []


def test_the_fallback_reads_nvidia_smi_through_the_remote_script(tmp_path):
    report = fallback(tmp_path)
    assert report.error is None and report.source == "nvidia-smi"
    assert report.fallback_reason == (
        "launch not found: install it there or set hosts.ned.command")
    gpus = report.status["gpus"]
    assert [g["memory_used_bytes"] // 2**20 for g in gpus] == [41506, 3078, 0, 20992]
    assert [p["pid"] for g in gpus for p in g["processes"]] == [48213, 51877, 60012, 70101]
    assert report.status["sweeps"] == [] and report.status["user"]


def test_golden_hosts_view(tmp_path, utc):  # noqa: F811
    reports = [answered("busy4", "athena"), answered("mig", "myrtle"), fallback(tmp_path),
               HostReport("minerva", None, "timeout after 5 s")]
    ned, athena = reports[2], reports[0]
    reports[2] = ned._replace(status={**ned.status, "user": "carol", "time": NOW})
    reports[0] = athena._replace(status={**athena.status, "leases_protected": False})
    check_golden(GOLDEN.parent / "hosts" / "four.txt", render_hosts(reports, False, "NOTE"))
    data = hosts_json(reports, NOW)
    check_golden(GOLDEN.parent / "hosts" / "four.json", json.dumps(data, indent=1) + "\n")
    assert [(h["host"], h["hostname"], h["source"], h["error"]) for h in data] == [
        ("athena", "athena", "launch", None), ("myrtle", "zeus", "launch", None),
        ("ned", "ned", "nvidia-smi", None), ("minerva", "minerva", None, "timeout after 5 s")]
    local_keys = list(json.loads((GOLDEN / "busy4.json").read_text()))
    assert all(list(h)[:len(local_keys)] == local_keys for h in data)


def test_what_a_login_shell_prints_before_the_script_is_skipped(tmp_path):
    (tmp_path / "launch").write_text(f"#!/bin/sh\ncat {GOLDEN / 'busy4.json'}\n")
    (tmp_path / "launch").chmod(0o755)
    done = subprocess.run(["sh", "-c", 'echo "Welcome to athena"; exec sh -s'],
                          input=remote_script(str(tmp_path / "launch")), capture_output=True,
                          text=True, timeout=60)
    report = read_reply(HostSettings("athena"), Reply(done.returncode, done.stdout, ""), 5, NOW)
    assert done.stdout.startswith("Welcome to athena\n")
    assert report.status == json.loads((GOLDEN / "busy4.json").read_text())
