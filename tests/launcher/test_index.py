"""The user's index of sweeps: found from any folder, listed, forgotten; SWEEP left out means
the newest; a guessed target of a destructive command is confirmed at a terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rundirs import make_sweep, set_state, state_of
from test_executor import wait_ended

from launcher.cli import main
from launcher.rundir import index

SWEEP = "demo-20261122-221414"


def quick_sweep(folder: Path, name: str) -> Path:
    """Return a sweep file of two quick command jobs in folder."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "job": {"command": ["echo", "seed {seed}"]}, "seeds": 2,
        "resources": {"gpus_per_job": 0, "cpus_per_job": 1, "cpu_budget": 1}}))
    return path


@pytest.fixture
def two_folders(lab, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Two project folders, each with its own ./runs (no $LAUNCH_RUNS_DIR), and a home."""
    monkeypatch.delenv("LAUNCH_RUNS_DIR")
    folders = tmp_path / "alpha", tmp_path / "beta"
    for folder in (*folders, tmp_path / "home"):
        folder.mkdir()
    return folders


def test_sweeps_are_found_from_any_folder(two_folders, tmp_path, monkeypatch, capsys):
    started = []
    for folder, name in zip(two_folders, ("alpha", "beta"), strict=True):
        monkeypatch.chdir(folder)
        assert main(["sweep", str(quick_sweep(folder, name)), "--detach"]) == 0
        started.append(capsys.readouterr().out.split()[-1])
        wait_ended(started[-1])
    monkeypatch.chdir(tmp_path / "home")  # after `ssh box`: no ./runs here
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert all(s in out for s in started) and "no sweeps of yours" not in out
    assert main(["ls"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["SWEEP", "STATE", "JOBS", "WHERE"]
    assert [r.split()[0] for r in rows[1:]] == started[::-1]  # newest first
    assert rows[1].split()[1] == "ended" and "2 jobs: 2 finished" in rows[1]
    assert rows[1].endswith(str(two_folders[1] / "runs" / started[1]))  # where it lives
    assert rows[2].endswith(str(two_folders[0] / "runs" / started[0]))
    assert main(["logs", "alpha"]) == 0
    assert "ended" in capsys.readouterr().out
    assert main(["results", started[0], "--csv"]) == 0
    assert capsys.readouterr().out.count("\n") == 3  # a header and two jobs
    assert main(["sweep", "--resume", "alpha"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert main(["cancel", "beta"]) == 0
    assert "nothing to cancel" in capsys.readouterr().out


def test_a_command_given_no_sweep_takes_the_newest_and_says_so(two_folders, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(two_folders[0])
    assert main(["sweep", str(quick_sweep(two_folders[0], "alpha")), "--detach"]) == 0
    sweep_id = capsys.readouterr().out.split()[-1]
    wait_ended(sweep_id)
    monkeypatch.chdir(two_folders[1])
    for argv in (["results"], ["logs"], ["cancel"], ["sweep", "--resume"]):
        assert main(argv) == 0, argv
        err = capsys.readouterr().err
        assert f"launch: no SWEEP given: {sweep_id}, your newest sweep" in err, argv


def test_forget_drops_the_sweep_and_delete_removes_its_folder(runs, capsys):
    paths = make_sweep(SWEEP, [("a-00000001", {"seed": 0}, {})])
    index.record(paths, time.time())
    other = make_sweep("other-20261122-221415", [("b-00000002", {"seed": 0}, {})])
    index.record(other, time.time())
    assert main(["forget", SWEEP]) == 0
    assert f"forgot {SWEEP}; its folder stays" in capsys.readouterr().out
    assert [e.sweep_id for e in index.entries()] == [other.sweep_id]
    assert paths.root.is_dir()  # and ./runs still finds it
    assert main(["forget", "other", "--delete"]) == 0  # no terminal: nobody to ask
    assert "deleted other-20261122-221415" in capsys.readouterr().out
    assert not other.root.exists() and index.entries() == []
    set_state(paths, "a-00000001", "running")
    assert main(["forget", SWEEP, "--delete"]) == 2
    assert "launch cancel" in capsys.readouterr().err and paths.root.is_dir()


def test_an_index_entry_whose_folder_is_gone_is_shown_and_can_be_forgotten(runs, capsys):
    paths = make_sweep(SWEEP, [("a-00000001", {"seed": 0}, {})])
    index.record(paths, time.time())
    import shutil

    shutil.rmtree(paths.root)
    assert main(["ls"]) == 0
    out = capsys.readouterr()
    assert "no sweeps of yours" in out.out and f"launch forget {SWEEP}" in out.err
    assert main(["forget", "demo"]) == 0
    assert index.entries() == []


def at_a_terminal(argv: list[str], answer: bytes | None) -> tuple[int, str]:
    """Run `launch argv` with a terminal for stdin and stderr; answer its question."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", *argv], stdin=slave,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the other side closed: the command ended
            break
        if not chunk:
            break
        seen += chunk
        if answer is not None and b"[y/N]" in seen:
            os.write(master, answer)
            answer = None
    os.close(master)
    return proc.wait(timeout=60), seen.decode(errors="replace")


@pytest.mark.parametrize("named, answer, asked, cancelled", [
    ("demo", b"n\n", True, False),
    ("demo", b"y\n", True, True),
    ("", b"n\n", True, False),  # no SWEEP: the newest, a guess too
    (SWEEP, None, False, True),  # named in full: no question
])
def test_cancel_asks_at_a_terminal_when_the_sweep_was_guessed(runs, named, answer, asked,
                                                              cancelled):
    paths = make_sweep(SWEEP, [("a-00000001", {"seed": 0}, {})])
    index.record(paths, time.time())
    code, seen = at_a_terminal(["cancel", *filter(None, [named])], answer)
    assert ("[y/N]" in seen) == asked, seen
    assert (state_of(SWEEP, "a-00000001").state == "cancelled") == cancelled, seen
    assert code == (0 if cancelled else 1), seen
    if asked:
        assert f"cancel sweep {SWEEP} (1 pending)?" in seen


def test_yes_cancels_a_guessed_sweep_at_a_terminal_without_asking(runs):
    make_sweep(SWEEP, [("a-00000001", {"seed": 0}, {})])
    code, seen = at_a_terminal(["cancel", "demo", "--yes"], None)
    assert code == 0 and "[y/N]" not in seen, seen
    assert state_of(SWEEP, "a-00000001").state == "cancelled"


@pytest.mark.parametrize("argv, answer, deleted", [
    (["forget", "demo", "--delete"], b"n\n", False),
    (["forget", "demo", "--delete"], b"y\n", True),
    (["forget", SWEEP, "--delete"], b"n\n", False),  # named in full: a folder is still asked
    (["forget", "demo", "--delete", "--yes"], None, True),
])
def test_forget_delete_asks_at_a_terminal_before_removing_a_folder(runs, argv, answer, deleted):
    paths = make_sweep(SWEEP, [("a-00000001", {"seed": 0}, {})])
    index.record(paths, time.time())
    code, seen = at_a_terminal(argv, answer)
    assert ("[y/N]" in seen) == (answer is not None), seen
    assert paths.root.exists() != deleted, seen
    assert code == (0 if deleted else 1), seen
    if answer is not None:
        assert f"delete {SWEEP} (1 job: 1 pending) and its folder" in seen, seen
    assert ("nothing deleted" in seen) == (not deleted), seen
    assert bool(index.entries()) != deleted
