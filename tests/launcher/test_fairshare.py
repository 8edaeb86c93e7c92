"""Turns between sweeps: who gives a freed GPU way, and the wait notices they read."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.config.sweepfile import Resources
from launcher.machine import fairshare
from launcher.machine.fairshare import Waiter
from launcher.machine.placement import Grant, Placer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"


@pytest.fixture
def lock_dir(lock_dir):
    """The shared fixture's lease directory, made."""
    lock_dir.mkdir(mode=0o1777)
    return lock_dir


@pytest.mark.parametrize("waiting, holding, want", [
    ([], 3, None),                                         # nobody waits
    ([Waiter("b", "bob", 10.0, 2)], 1, None),               # richer than we are
    ([Waiter("b", "bob", 10.0, 1)], 1, None),               # as rich: trading places idles
    ([Waiter("b", "bob", 10.0, 0)], 1, "b"),                # poorer: give way
    ([Waiter("b", "bob", 10.0, 0)], 0, "b"),                # one GPU, two sweeps: turns
    ([Waiter("b", "bob", 10.0, 1), Waiter("c", "cy", 20.0, 0)], 3, "c"),  # poorest first
    ([Waiter("b", "bob", 20.0, 0), Waiter("c", "cy", 10.0, 0)], 3, "c"),  # then longest wait
])
def test_who_a_freed_gpu_is_left_to(waiting, holding, want):
    turns = fairshare.Turns()
    turns.freed(now=100.0)
    rival = turns.rival(waiting, holding, now=100.5)
    assert (rival.sweep if rival else None) == want


def test_a_sweep_gives_way_only_for_yield_s_after_it_frees_a_gpu():
    waiting = [Waiter("b", "bob", 0.0, 0)]  # b has waited since t=0
    turns = fairshare.Turns()
    assert turns.rival(waiting, 2, now=50.0) is None  # nothing of ours was freed yet
    turns.freed(now=60.0)  # a job of ours ends a minute after b began to wait
    assert turns.rival(waiting, 1, now=60.0).sweep == "b"
    assert turns.rival(waiting, 1, now=60.0 + fairshare.YIELD_S - 0.1).sweep == "b"
    assert turns.rival(waiting, 1, now=60.0 + fairshare.YIELD_S) is None
    # b let a whole window pass: it cannot use our GPUs, so the next one freed is ours.
    turns.freed(now=100.0)
    assert turns.rival(waiting, 1, now=100.0) is None
    # b waiting anew (it got a GPU elsewhere, and its next job waits) is a new wait.
    again = [Waiter("b", "bob", 150.0, 1)]
    turns.freed(now=160.0)
    assert turns.rival(again, 2, now=160.0).sweep == "b"


def test_placers_of_two_sweeps_take_turns(lab, lock_dir, monkeypatch):
    monkeypatch.setattr(fairshare, "NOTICE_AFTER_S", 0.0)
    res = Resources(gpus_per_job=1, include_gpus=(0,), cpu_budget=4, cpus_per_job=1)
    first, later = Placer("first-1", res.needs()), Placer("later-1", res.needs())
    a1 = first.grant("a1", {})
    assert isinstance(a1, Grant)
    assert "need 1 GPU, 0 free" in later.grant("b1", {})  # it waits, and says so
    (waiter,) = fairshare.waiters(lock_dir, but="first-1")
    assert (waiter.sweep, waiter.holding) == ("later-1", 0)
    a1.release()
    first.released("a1")  # a1 ended: its GPU is free, and the later sweep waits
    assert "leaving a freed GPU to sweep later-1" in first.grant("a2", {})
    b1 = later.grant("b1", {})
    assert isinstance(b1, Grant) and fairshare.waiters(lock_dir) == []  # notice withdrawn
    assert "need 1 GPU, 0 free" in first.grant("a2", {})  # its own turn to wait
    assert [w.sweep for w in fairshare.waiters(lock_dir)] == ["first-1"]
    b1.release()
    later.released("b1")  # one GPU, two sweeps: the turn goes back to the first
    assert "leaving a freed GPU to sweep first-1" in later.grant("b2", {})
    assert isinstance(first.grant("a2", {}), Grant)
    first.close()
    assert fairshare.waiters(lock_dir) == []


def test_a_posted_notice_is_read_by_others_and_gone_once_withdrawn(lock_dir):
    notice = fairshare.Notice(lock_dir, "later-1", "bob")
    notice.post(holding=0)
    (waiter,) = fairshare.waiters(lock_dir, but="first-1")
    assert (waiter.sweep, waiter.user, waiter.holding) == ("later-1", "bob", 0)
    assert fairshare.waiters(lock_dir, but="later-1") == []  # a sweep never waits on itself
    notice.post(holding=2)  # the same wait, now holding two GPUs
    (again,) = fairshare.waiters(lock_dir)
    assert again.holding == 2 and again.since == waiter.since
    notice.withdraw()
    assert fairshare.waiters(lock_dir) == []
    assert not fairshare.notice_path(lock_dir, "later-1").exists()
    notice.post(holding=1)  # a new wait: a new since
    (third,) = fairshare.waiters(lock_dir)
    assert third.since > waiter.since
    notice.withdraw()


def test_the_notice_of_a_killed_sweep_is_not_a_wait(lock_dir):
    code = ("import sys, time; from launcher.machine import fairshare; "
            f"fairshare.Notice({str(lock_dir)!r}, 'gone-1', 'eve').post(0); "
            "print('posted', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "posted"
        assert [w.sweep for w in fairshare.waiters(lock_dir)] == ["gone-1"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert fairshare.waiters(lock_dir) == []  # the file stays; its flock died with it
        assert fairshare.notice_path(lock_dir, "gone-1").exists()
    finally:
        proc.kill()
        proc.wait()
