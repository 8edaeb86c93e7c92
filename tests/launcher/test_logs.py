"""`launch logs`: print and follow logs that real processes write, stopping when they end."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from launcher.cli import main
from launcher.commands import logs
from launcher.errors import UserError
from launcher.rundir import store

SWEEP = "demo-20261122-193455"
JOB_IDS = ["alexnet-s0-1a2b3c4d", "alexnet-s1-2b3c4d5e", "resnet9-s0-3c4d5e6f"]
FOLLOW_LIMIT_S = 60  # a follow that never stops fails the test instead of hanging it

# Appends numbered lines to a log, then records the end the way the supervisor does:
# state.json replaced atomically after the output is complete. With a go-file named, it
# starts only once that file exists (the follower made it: it waits for the log already).
WRITER = textwrap.dedent("""
    import json, os, sys, time
    log, n, go, linger_s = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[-1])
    state_paths = sys.argv[4:-1]
    while go and not os.path.exists(go):
        time.sleep(0.01)
    with open(log, "a") as f:
        for i in range(n):
            f.write(f"line {i} of {n}\\n")
            f.flush()
            time.sleep(0.03)
    for p in state_paths:
        with open(p + ".tmp", "w") as f:
            json.dump({"state": "finished"}, f)
        os.replace(p + ".tmp", p)
    with open(log, "a") as f:
        f.write("after the state changed\\n")
    time.sleep(linger_s)
""")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """A local sweep of three jobs with no logs yet; $LAUNCH_RUNS_DIR points at it."""
    root = tmp_path / "runs"
    write_json(root / SWEEP / "sweep.json", {
        "format": "launch-sweep/1", "sweep_id": SWEEP, "name": "demo", "executor": "local",
        "grid_keys": ["seed"], "jobs": [{"id": j, "params": {}} for j in JOB_IDS]})
    for j in JOB_IDS:
        (root / SWEEP / "jobs" / j).mkdir(parents=True)
    monkeypatch.setenv("LAUNCH_RUNS_DIR", str(root))
    return root


def start_writer(log: Path, n: int, state_paths: list[Path], linger_s: float = 0.0,
                 go: Path | None = None):
    argv = [sys.executable, "-c", WRITER, str(log), str(n), str(go or ""),
            *map(str, state_paths), str(linger_s)]
    return subprocess.Popen(argv)


def follow_in_thread(target: str, lines: int | None = None, pace: logs.Pace | None = None) -> str:
    """Return why following target stopped, failing (not hanging) if it never stops."""
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(
        logs.follow_log(logs.resolve_target(target), lines, pace)), daemon=True)
    t.start()
    t.join(FOLLOW_LIMIT_S)
    assert not t.is_alive(), f"launch logs -f {target} did not stop"
    return out[0]


def starting(go: Path) -> logs.Pace:
    """Return a follower's pace whose first pause makes go: the writer starts only then."""
    def sleep(seconds: float) -> None:
        go.touch()
        time.sleep(seconds)
    return logs.Pace(sleep=sleep)


def test_print_whole_file_and_last_lines(runs, capsys):
    log = runs / SWEEP / "supervisor.log"
    log.write_text("".join(f"s{i}\n" for i in range(5)))
    assert logs.run_logs(SWEEP, follow=False, lines=None) == 0
    assert capsys.readouterr().out == "s0\ns1\ns2\ns3\ns4\n"
    assert main(["logs", "demo", "-n", "2"]) == 0
    assert capsys.readouterr().out == "s3\ns4\n"
    assert main(["logs", "demo", "-n", "0"]) == 0
    assert capsys.readouterr().out == ""


def test_job_prefix_picks_its_stdout(runs, capsys):
    (runs / SWEEP / "jobs" / JOB_IDS[2] / "stdout.log").write_text("epoch 1 done\n")
    assert main(["logs", f"{SWEEP}/resnet9"]) == 0
    assert capsys.readouterr().out == "epoch 1 done\n"
    with pytest.raises(UserError, match="2 jobs of sweep .* match 'alexnet':\n  alexnet-s0-"):
        logs.run_logs(f"{SWEEP}/alexnet", follow=False, lines=None)
    assert main(["logs", f"{SWEEP}/nosuch"]) == 2
    assert f"no job of sweep {SWEEP} matches 'nosuch'" in capsys.readouterr().err


def test_missing_log_says_why(runs, capsys):
    assert logs.run_logs(f"{SWEEP}/resnet9", follow=False, lines=None) == 1
    err = capsys.readouterr().err
    assert "no log yet" in err and "job is pending" in err


@pytest.mark.parametrize("size", [0, 1, 5, 20000])
def test_tail_offset_counts_lines_from_the_end(size):
    lines = [f"{i:05d} " + "x" * (i % 7) for i in range(size)]
    for text in ("\n".join(lines) + "\n", "\n".join(lines)):  # with and without a final newline
        data = text.encode()
        for n in (1, 3, 10000):
            start = store.tail_offset(io.BytesIO(data), n)
            assert data[start:].decode().splitlines() == text.splitlines()[-n:]


def test_follow_job_waits_for_the_file_and_stops_when_finished(runs, tmp_path, capsys):
    job = runs / SWEEP / "jobs" / JOB_IDS[0]
    go = tmp_path / "go"
    writer = start_writer(job / "stdout.log", 40, [job / "state.json"], go=go)
    try:
        assert follow_in_thread(f"{SWEEP}/{JOB_IDS[0]}", pace=starting(go)) == "job finished"
    finally:
        writer.wait(30)
    captured = capsys.readouterr()
    expected = [f"line {i} of 40" for i in range(40)] + ["after the state changed"]
    assert captured.out.splitlines() == expected
    assert "waiting for" in captured.err


def test_follow_sweep_runs_until_supervisor_is_gone(runs, capsys):
    """All jobs end while the supervisor still writes: following stops only once it exits."""
    sweep = runs / SWEEP
    states = [sweep / "jobs" / j / "state.json" for j in JOB_IDS]
    writer = start_writer(sweep / "supervisor.log", 10, states, linger_s=1.5)
    # reap it at once, as init reaps a real detached supervisor: a zombie still looks alive
    reaper = threading.Thread(target=writer.wait, daemon=True)
    reaper.start()
    try:
        write_json(sweep / "supervisor.json", {
            "pid": writer.pid, "host": socket.gethostname(),
            "create_time": psutil.Process(writer.pid).create_time()})
        assert follow_in_thread(SWEEP, lines=None) == "sweep ended"
        assert not reaper.is_alive(), "following stopped while the supervisor still ran"
    finally:
        reaper.join(30)
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "after the state changed"
    assert len(captured.out.splitlines()) == 11


def test_follow_stops_on_a_dead_supervisor(runs, capsys):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    write_json(runs / SWEEP / "supervisor.json", {
        "pid": int(gone.stdout), "host": socket.gethostname(), "create_time": 1.0})
    (runs / SWEEP / "supervisor.log").write_text("start a\n")
    reason = follow_in_thread(SWEEP)
    assert "supervisor is dead" in reason and "--resume" in reason
    assert capsys.readouterr().out == "start a\n"


def test_follow_sleeps_between_reads_and_ctrl_c_exits_0(runs, capsys):
    (runs / SWEEP / "jobs" / JOB_IDS[1] / "stdout.log").write_text("one\n")
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            raise KeyboardInterrupt

    pace = logs.Pace(sleep=sleep)
    assert logs.run_logs(f"{SWEEP}/{JOB_IDS[1]}", follow=True, lines=None, pace=pace) == 0
    assert capsys.readouterr().out == "one\n"
    assert pauses == [logs.POLL_S] * 3  # an idle follow pauses before every new read


@pytest.mark.parametrize(
    ("job_state", "all_ended", "supervisor", "executor", "stops"),
    [
        ("running", False, True, "local", False),
        ("pending", False, None, "local", False),  # a retry goes back to pending
        ("failed", False, True, "local", True),
        ("finished", False, None, "slurm", True),
        (None, True, True, "local", False),  # jobs ended, supervisor still writing its summary
        (None, True, False, "local", True),
        (None, False, None, "local", False),  # supervisor not started yet
        (None, True, None, "slurm", True),
        (None, False, False, "local", True),  # dead: nothing writes until --resume
    ],
)
def test_follow_verdict(job_state, all_ended, supervisor, executor, stops):
    verdict = logs.follow_verdict(job_state, all_ended, supervisor, executor)
    assert (verdict is not None) == stops


def test_negative_lines_is_a_user_error(runs):
    with pytest.raises(UserError, match="-n takes"):
        logs.run_logs(SWEEP, follow=False, lines=-1)


def test_multibyte_characters_survive_small_reads(runs, capsys, monkeypatch):
    monkeypatch.setattr(store, "TAIL_BLOCK_BYTES", 3)
    (runs / SWEEP / "supervisor.log").write_bytes("αβγ\nδεζ\n".encode())
    assert logs.run_logs(SWEEP, follow=False, lines=1) == 0
    assert capsys.readouterr().out == "δεζ\n"
    printer = logs.Printer()
    for byte in "ωx\n".encode():  # a follow may read half a character
        printer.write(bytes([byte]))
    assert capsys.readouterr().out == "ωx\n"
