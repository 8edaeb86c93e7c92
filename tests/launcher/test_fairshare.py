"""Turns between sweeps: who gives a freed GPU way, and the wait notices they read."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.config.sweepfile import Resources
from launcher.machine import fairshare, leases
from launcher.machine.fairshare import Waiter
from launcher.machine.placement import Grant, Placer
from launcher.machine.users import current_user

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"


@pytest.fixture
def lock_dir(lock_dir):
    """The shared fixture's lease directory, made."""
    lock_dir.mkdir()
    lock_dir.chmod(0o1777)
    return lock_dir


def notice_path(lock_dir: Path, sweep_id: str) -> Path:
    return lock_dir / "meta" / str(os.getuid()) / f"wait.{sweep_id}"


@pytest.mark.parametrize("bad", [
    {"since": "now", "holding": 0}, {"since": 1.0, "holding": "x"}, {"since": 1.0, "holding": -1},
    {"since": 1.0, "holding": 0, "wants": "everything"}, [], {"since": float("nan")},
])
def test_a_notice_that_makes_no_sense_is_no_wait(lock_dir, bad):
    import fcntl
    import json

    folder = lock_dir / "meta" / str(os.getuid())
    folder.mkdir(parents=True)
    fd = os.open(folder / "wait.odd-1", os.O_RDWR | os.O_CREAT)
    os.write(fd, json.dumps(bad).encode())
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert fairshare.waiters(lock_dir) == []
    finally:
        os.close(fd)


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
    took = set()
    turns = fairshare.Turns(took=lambda w: w.sweep in took)
    assert turns.rival(waiting, 2, now=50.0) is None  # nothing of ours was freed yet
    turns.freed(now=60.0)  # a job of ours ends a minute after b began to wait
    assert turns.rival(waiting, 1, now=60.0).sweep == "b"
    assert turns.rival(waiting, 1, now=60.0 + fairshare.YIELD_S - 0.1).sweep == "b"
    took.add("b")  # b took the GPU: its wait ends with it
    assert turns.rival([], 1, now=60.0 + fairshare.YIELD_S - 0.05) is None
    assert "b" not in turns.passed_up
    # b waits again later, and is given way to again.
    turns.freed(now=100.0)
    assert turns.rival([Waiter("b", "bob", 90.0, 1)], 2, now=100.0).sweep == "b"


def test_a_wait_that_lets_windows_pass_is_not_given_way_to_again():
    # A notice whose sweep never takes what was freed (it wants other GPUs, or it is fake
    # and renewed with a new `since` each time) costs one window, and its user PASS_LIMIT.
    turns = fairshare.Turns(took=lambda w: False)
    now, idle = 0.0, 0.0
    for n in range(10):
        turns.freed(now)
        fake = [Waiter(f"fake-{n % 3}", "eve", now - 1.0, 0)]  # renewed, then new sweep ids
        while turns.rival(fake, 1, now) is not None:
            now += 1.0
            idle += 1.0
        now += 1.0
    assert fairshare.YIELD_S <= idle <= fairshare.PASS_LIMIT * fairshare.YIELD_S
    turns.freed(now)  # another user's wait is still given way to
    assert turns.rival([Waiter("honest", "bob", now, 0)], 1, now).sweep == "honest"


def test_placers_of_two_sweeps_take_turns(lab, lock_dir, monkeypatch):
    monkeypatch.setattr(fairshare, "NOTICE_AFTER_S", 0.0)
    res = Resources(gpus_per_job=1, include_gpus=(0,), cpu_budget=4, cpus_per_job=1)
    first, later = Placer("first-1", res.needs()), Placer("later-1", res.needs())
    a1 = first.grant("a1", {})
    assert isinstance(a1, Grant)
    assert "need 1 GPU, 0 free" in later.grant("b1", {})  # it waits, and says so
    (waiter,) = fairshare.waiters(lock_dir, but="first-1")
    assert (waiter.sweep, waiter.holding, waiter.wants) == ("later-1", 0, "gpus")
    a1.release()
    first.released("a1")  # a1 ended: its GPU is free, and the later sweep waits
    assert "leaving a freed GPU to sweep later-1" in first.grant("a2", {})
    # The first sweep gave way, and waits from then on: its notice is up at once, so the
    # later sweep's job, however short, gives the GPU back when it ends.
    assert sorted(w.sweep for w in fairshare.waiters(lock_dir)) == ["first-1", "later-1"]
    b1 = later.grant("b1", {})
    assert isinstance(b1, Grant)  # the later sweep's notice is withdrawn
    assert [w.sweep for w in fairshare.waiters(lock_dir)] == ["first-1"]
    assert "need 1 GPU, 0 free" in first.grant("a2", {})  # its own turn to wait
    assert [w.sweep for w in fairshare.waiters(lock_dir)] == ["first-1"]
    b1.release()
    later.released("b1")  # one GPU, two sweeps: the turn goes back to the first
    assert "leaving a freed GPU to sweep first-1" in later.grant("b2", {})
    assert isinstance(first.grant("a2", {}), Grant)
    assert [w.sweep for w in fairshare.waiters(lock_dir)] == ["later-1"]  # its turn is next
    first.close()
    later.close()
    assert fairshare.waiters(lock_dir) == []


def test_two_sweeps_that_freed_one_gpu_in_turn_never_give_it_way_to_each_other(
        lab, lock_dir, monkeypatch):
    # Seen with two users on one GPU: b's window from its last job's end was still open when
    # a, which had taken that GPU and freed it since, gave it way to b; b then gave it back
    # way to a's fresh wait, and the GPU stood idle for YIELD_S, a strike against a's user.
    monkeypatch.setattr(fairshare, "NOTICE_AFTER_S", 0.0)
    res = Resources(gpus_per_job=1, include_gpus=(0,), cpu_budget=4, cpus_per_job=1)
    a, b = Placer("a-1", res.needs()), Placer("b-1", res.needs())
    a1 = a.grant("a1", {})
    assert isinstance(a1, Grant)
    assert "need 1 GPU, 0 free" in b.grant("b1", {})
    a1.release()
    a.released("a1")
    assert "leaving a freed GPU to sweep b-1" in a.grant("a2", {})
    b1 = b.grant("b1", {})
    assert isinstance(b1, Grant)
    b1.release()
    b.released("b1")  # b's window opens, but a looks first and takes the GPU
    a2 = a.grant("a2", {})
    assert isinstance(a2, Grant)
    assert "need 1 GPU, 0 free" in b.grant("b2", {})  # b waits, its window still open
    a2.release()
    a.released("a2")
    assert "leaving a freed GPU to sweep b-1" in a.grant("a3", {})
    # b's window is still open (within YIELD_S of b1's end), but a's wait began after it:
    # b takes its turn instead of leaving the GPU back to a.
    b2 = b.grant("b2", {})
    assert isinstance(b2, Grant)
    b2.release()
    a.close()
    b.close()


def test_a_window_closes_once_anybody_holds_what_was_freed(lab, lock_dir, monkeypatch):
    monkeypatch.setattr(fairshare, "NOTICE_AFTER_S", 0.0)
    res = Resources(gpus_per_job=1, include_gpus=(0,), cpu_budget=4, cpus_per_job=1)
    first, later = Placer("first-1", res.needs()), Placer("later-1", res.needs())
    a1 = first.grant("a1", {})
    assert "need 1 GPU, 0 free" in later.grant("b1", {})
    a1.release()
    first.released("a1")
    assert "leaving a freed GPU to sweep later-1" in first.grant("a2", {})
    # Another tool's job takes the GPU before the waiting sweep looks again.
    other = [leases.try_lock_slot(path, {"sweep": "other-tool"})
             for path in first.turns.freed if path.name.startswith("gpu.")]
    assert "need 1 GPU, 0 free" in first.grant("a2", {})
    gpus = first.turns.windows[fairshare.GPUS]
    assert not gpus.window_open(time.monotonic())  # nothing of ours is left to leave
    assert gpus.strikes == {} and not gpus.passed_up  # the waiter came too late: no blame
    for lease in other:
        lease.release()
    first.close()
    later.close()


def test_a_gpu_nobody_waiting_freed_goes_to_the_first_in_line(lab, lock_dir, monkeypatch):
    # A sweep that ends its last job gives nothing way: it places nothing more. The GPU it
    # leaves goes to the waiting sweep that holds the fewest, not to whoever looks first.
    monkeypatch.setattr(fairshare, "NOTICE_AFTER_S", 0.0)
    res = Resources(gpus_per_job=1, include_gpus=(0, 1), cpu_budget=4, cpus_per_job=1)
    rich, poor, ending = (Placer(f"{name}-1", res.needs()) for name in ("rich", "poor",
                                                                         "ending"))
    r1, e1 = rich.grant("r1", {}), ending.grant("e1", {})
    assert isinstance(r1, Grant) and isinstance(e1, Grant)
    assert "need 1 GPU, 0 free" in poor.grant("p1", {})  # holding none, it waits
    assert "need 1 GPU, 0 free" in rich.grant("r2", {})  # holding one, it waits too
    e1.release()
    ending.released("e1")
    ending.close()  # its sweep is done
    said = rich.grant("r2", {})  # the rich sweep looks first, and lets the poor one go
    assert "leaving a free GPU to sweep poor-1" in said and "first in line" in said
    p1 = poor.grant("p1", {})
    assert isinstance(p1, Grant)
    assert "need 1 GPU, 0 free" in rich.grant("r2", {})
    p1.release()
    poor.released("p1")
    poor.close()
    assert isinstance(rich.grant("r2", {}), Grant)  # nobody is ahead of it now
    rich.close()


def test_a_wait_lets_others_ahead_for_yield_s_at_most(lab, lock_dir, monkeypatch):
    monkeypatch.setattr(fairshare, "NOTICE_AFTER_S", 0.0)
    clock = [1000.0]
    monkeypatch.setattr(fairshare.time, "monotonic", lambda: clock[0])
    res = Resources(gpus_per_job=1, include_gpus=(0, 1), cpu_budget=4, cpus_per_job=1)
    us = Placer("us-1", res.needs())
    u1 = us.grant("u1", {})
    assert isinstance(u1, Grant)
    them = fairshare.Notice(lock_dir, "them-1", "x")
    them.post(holding=0)  # a sweep that holds none, waits, and never takes anything
    assert "first in line" in us.grant("u2", {})
    clock[0] += fairshare.YIELD_S - 0.1
    assert "first in line" in us.grant("u2", {})
    clock[0] += 0.2
    assert isinstance(us.grant("u2", {}), Grant)  # our wait let it ahead long enough
    assert us.turns.line_strikes == {current_user(): 1}
    u1.release()
    us.close()
    them.withdraw()


def test_a_waiter_that_took_its_turn_is_trusted_again():
    took = set()
    turns = fairshare.Turns(took=lambda w: w.sweep in took)
    for n in range(fairshare.PASS_LIMIT - 1):  # bob lets windows pass, one short of the limit
        turns.freed(now=100.0 * n)
        assert turns.rival([Waiter(f"b{n}", "bob", 0.0, 0)], 1, 100.0 * n) is not None
        assert turns.rival([], 1, 100.0 * n + fairshare.YIELD_S) is None
    turns.freed(now=1000.0)
    assert turns.rival([Waiter("b", "bob", 0.0, 0)], 1, 1000.0).sweep == "b"
    took.add("b")
    turns.close()  # we were granted later: b holds what we freed, its turn counts
    assert turns.strikes == {}
    for n in range(fairshare.PASS_LIMIT - 1):  # so bob's next honest miss is not its last
        turns.freed(now=2000.0 + 100 * n)
        assert turns.rival([Waiter(f"c{n}", "bob", 0.0, 0)], 1, 2000.0 + 100 * n) is not None
        assert turns.rival([], 1, 2000.0 + 100 * n + fairshare.YIELD_S) is None
    turns.freed(now=3000.0)
    assert turns.rival([Waiter("d", "bob", 0.0, 0)], 1, 3000.0).sweep == "d"


def test_a_wait_that_began_after_we_freed_is_not_given_way_to():
    turns = fairshare.Turns()
    turns.freed(now=100.0, wall=5000.0)
    assert turns.rival([Waiter("late", "bob", 5001.0, 0)], 0, now=100.5) is None
    assert turns.rival([Waiter("early", "bob", 4999.0, 0)], 0, now=100.5).sweep == "early"


def test_a_posted_notice_is_read_by_others_and_gone_once_withdrawn(lock_dir):
    notice = fairshare.Notice(lock_dir, "later-1", "bob")
    notice.post(holding=0)
    (waiter,) = fairshare.waiters(lock_dir, but="first-1")
    # The user is whoever owns the notice's folder, not what the notice says.
    assert (waiter.sweep, waiter.user, waiter.holding) == ("later-1", current_user(), 0)
    assert fairshare.waiters(lock_dir, but="later-1") == []  # a sweep never waits on itself
    notice.post(holding=2)  # the same wait, now holding two GPUs
    (again,) = fairshare.waiters(lock_dir)
    assert again.holding == 2 and again.since == waiter.since
    notice.withdraw()
    assert fairshare.waiters(lock_dir) == []
    assert not notice_path(lock_dir, "later-1").exists()
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
        assert notice_path(lock_dir, "gone-1").exists()
    finally:
        proc.kill()
        proc.wait()
