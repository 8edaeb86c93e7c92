"""Turns between sweeps: who gives a freed GPU way, and the wait notices they read."""

import os
import signal
import subprocess
import sys

import pytest

from launcher import fairshare
from launcher.fairshare import Waiter


@pytest.fixture
def lock_dir(tmp_path):
    path = tmp_path / "leases"
    path.mkdir(mode=0o1777)
    return path


@pytest.mark.parametrize("waiting, holding, want", [
    ([], 3, None),                                         # nobody waits
    ([Waiter("b", "bob", 10.0, 0)], 0, None),               # we hold nothing: take it
    ([Waiter("b", "bob", 10.0, 1)], 1, None),               # as rich as we are
    ([Waiter("b", "bob", 10.0, 2)], 1, None),               # richer than we are
    ([Waiter("b", "bob", 10.0, 0)], 1, "b"),                # poorer: give way
    ([Waiter("b", "bob", 10.0, 1), Waiter("c", "cy", 20.0, 0)], 3, "c"),  # poorest first
    ([Waiter("b", "bob", 20.0, 0), Waiter("c", "cy", 10.0, 0)], 3, "c"),  # then longest wait
])
def test_who_a_freed_gpu_is_left_to(waiting, holding, want):
    rival = fairshare.rival(waiting, holding, {}, now=100.0)
    assert (rival.sweep if rival else None) == want


def test_giving_way_to_one_wait_lasts_at_most_yield_s():
    waiting = [Waiter("b", "bob", 10.0, 0)]
    seen: dict = {}
    assert fairshare.rival(waiting, 2, seen, now=100.0).sweep == "b"
    assert fairshare.rival(waiting, 2, seen, now=100.0 + fairshare.YIELD_S - 0.1).sweep == "b"
    assert fairshare.rival(waiting, 2, seen, now=100.0 + fairshare.YIELD_S) is None
    # The same sweep waiting again (it got a GPU and its next job waits) is a new wait.
    again = [Waiter("b", "bob", 150.0, 1)]
    assert fairshare.rival(again, 2, seen, now=160.0).sweep == "b"


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
    code = ("import sys, time; from launcher import fairshare; "
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
