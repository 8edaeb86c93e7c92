"""Turns between sweeps: a sweep that waits for GPUs or CPUs says so, a richer one lets it in.

A supervisor wakes the moment its own job ends and would take the freed GPU back before a
sweep started later (another user's, or another of yours) looks again, so the first sweep
on a machine would keep every GPU until its last job. Instead, a sweep whose next job has
waited NOTICE_AFTER_S (most waits end sooner, with the next job's end) holds an flock on its
notice, meta/<uid>/wait.<sweep id> in the lease directory, which says what it waits for
(GPUs or CPUs) and how many it holds. When one of a sweep's jobs frees GPUs (or CPU tokens),
the sweep looks for such notices before it takes them again: while one comes from a sweep
that holds fewer than it still does (or, like it, none), it leaves them free for up to
YIELD_S, long enough for the waiting sweep to see a GPU idle in NVML and lease it (Turns).
Between users, what a user holds over all their sweeps counts (machine/house.py: held_by,
from metadata only that user can write), and another user's sweep goes before one of our
own: repeated at each job end, GPUs and CPUs end up split as evenly as they divide between
the users that want them, then between each user's sweeps, and two sweeps on one GPU take
turns job by job. Equal holdings
otherwise keep what they have: giving way leaves a GPU idle for a while, and trading places
would only repeat that.

A window is for what one of our jobs freed, and only for sweeps that were waiting when it was
freed: it closes as soon as anybody holds what was freed (the waiter, or a sweep that got
there first), or we are granted something ourselves. A window left open after that would
have two sweeps, each having freed the same GPU in turn, give it way to each other until
both windows ran out.

A notice is only an announcement: the GPU itself still goes to whoever wins its lease. The
flock makes a notice die with its sweep; the file is removed when the wait ends. Notices
come from other users, so each is checked: the user is the owner of its folder, numbers must
be numbers, and a wait that lets a window pass without taking what was freed is not given
way to again; after PASS_LIMIT such windows in a row its user's notices are ignored until
one of them takes its turn. So a notice, true or fake, can delay a sweep by at most YIELD_S
once per freed GPU, and a user whose notices never take anything by at most PASS_LIMIT
windows in all.

Waiter and Notice are a notice as read and as posted, Turns one window's decisions, and
SweepTurns one sweep's side of it all, as its Placer (placement.py) uses it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from launcher.machine import foreign, holders, house, leasedir

PREFIX = "wait."
NOTICE_AFTER_S = 1.0  # a sweep posts its notice once it has waited this long
# A waiting sweep needs a few NVML looks (utilisation must stay low in three of them, two
# seconds apart) before it trusts a GPU that was just freed.
YIELD_S = 10.0
PASS_LIMIT = 2  # windows a user's waits may let pass before their notices are ignored
GPUS, CPUS = "gpus", "cpus"  # what a notice waits for


class Waiter(NamedTuple):
    """A sweep whose next job waits for GPUs or CPUs, as its notice says."""

    sweep: str
    user: str
    since: float  # when this wait began (unix time)
    holding: int  # GPUs its running jobs hold
    cpus: int = 0  # CPU tokens its running jobs hold
    wants: str = GPUS
    uid: int | None = None  # whose notice it is: the owner of its folder

    def held(self, kind: str) -> int:
        """Return how many of kind (GPUS or CPUS) the sweep holds."""
        return self.cpus if kind == CPUS else self.holding


def waiters(lock_dir: Path, but: str = "") -> list[Waiter]:
    """Return the sweeps that wait now (their notice is held), except sweep `but`."""
    out = []
    for uid, folder in holders.user_folders(Path(lock_dir)):
        try:
            names = [n for n in os.listdir(folder) if n.startswith(PREFIX)]
        except OSError:
            continue
        for name in names:
            sweep = name[len(PREFIX):]
            if sweep == but:
                continue
            # Probed, not looked up in /proc/locks (milliseconds on some kernels): at worst
            # the probe turns the notice's owner away once, and it posts again a second later.
            meta = holders.probe(folder / name)
            waiter = _waiter(sweep, uid, meta) if meta is not None else None
            if waiter is not None:
                out.append(waiter)
    return out


def _waiter(sweep: str, uid: int, meta: dict) -> Waiter | None:
    """Return the wait a notice describes, or None when it does not make sense."""
    since = foreign.number(meta.get("since"))
    holding = foreign.integer(meta.get("holding", 0), high=100_000)
    cpus = foreign.integer(meta.get("cpus", 0), high=100_000)
    wants = meta.get("wants", GPUS)
    if since is None or holding is None or cpus is None or wants not in (GPUS, CPUS):
        return None
    return Waiter(foreign.text(sweep), foreign.user_name(uid), since, holding, cpus, wants, uid)


class Turns:
    """When our sweep gives way (for one kind, GPUS or CPUS): for YIELD_S after one of its
    jobs frees some, to a sweep that waited then and holds fewer than we still do (or none,
    like us).

    `took(waiter)` says whether a waiter now holds what we freed; a wait that lets the
    window pass without it is not given way to again, nor, after PASS_LIMIT in a row, its
    user's.
    """

    def __init__(self, kind: str = GPUS, took: Callable[[Waiter], bool] | None = None) -> None:
        self.kind = kind
        self.took = took or (lambda waiter: True)
        self.freed_at: float | None = None  # monotonic
        self.freed_wall = 0.0  # the same moment, unix time, as a notice's `since`
        self.gave_way_to: Waiter | None = None
        self.passed_up: set[tuple[str, float]] = set()  # waits: (sweep, since)
        self.strikes: dict[str, int] = {}  # user -> windows let pass in a row

    def freed(self, now: float, wall: float | None = None) -> None:
        """Note that one of our jobs has just freed some: a window to give way opens."""
        self.freed_at = now
        self.freed_wall = time.time() if wall is None else wall

    def close(self, judge: bool = True) -> None:
        """End the window: what we freed is held again (by anybody), or we were granted.

        judge=False: somebody else holds it, so a waiter we gave way to that did not take it
        came too late and let nothing pass; it is neither blamed nor forgiven.
        """
        if self.freed_at is not None:
            if judge or self.gave_way_to is None or self.took(self.gave_way_to):
                self._settle()
            else:
                self.gave_way_to = None
            self.freed_at = None

    def _settle(self, wait_ended: bool = False) -> None:
        """Judge the waiter we gave way to, now that its window or its wait is over.

        A wait that ended within the window (its notice gone, or a new wait of the sweep
        posted since) took something; one still the same wait when the window closes let
        the window pass, unless it holds what we freed after all.
        """
        waiter, self.gave_way_to = self.gave_way_to, None
        if waiter is None:
            return
        if wait_ended or self.took(waiter):
            self.strikes.pop(waiter.user, None)  # it took its turn: its user is trusted again
        else:
            self.passed_up.add((waiter.sweep, waiter.since))
            self.strikes[waiter.user] = self.strikes.get(waiter.user, 0) + 1

    def window_open(self, now: float) -> bool:
        """Return whether what we freed is still within its YIELD_S."""
        if self.freed_at is not None and now - self.freed_at >= YIELD_S:
            self.close()
        return self.freed_at is not None

    def rival(self, waiting: list[Waiter], holding: int, now: float,
              user_held: Callable[[int], int] | None = None,
              uid: int | None = None) -> Waiter | None:
        """Return the waiting sweep to leave what we freed to, or None to take it ourselves.

        `holding` is how many our running jobs hold, the freed ones no longer counted. Between
        users, what counts is what each user holds in all (`user_held(uid)`, our own user
        being `uid`): a waiter whose user holds fewer than ours is let in, or one holding
        none when we hold none. Between sweeps of one user the sweeps' holdings count the
        same way. The poorest user goes first, then the poorest sweep, another user's before
        one of our own, then the one waiting longest.
        """
        if not self.window_open(now):
            return None
        if self.gave_way_to is not None and (self.gave_way_to.sweep, self.gave_way_to.since) \
                not in {(w.sweep, w.since) for w in waiting}:
            self._settle(wait_ended=True)  # its wait ended: it took its turn
            self.freed_at = None
            return None

        def standing(w: Waiter) -> tuple[int, int]:
            """Return (what the waiter's side holds, what ours holds), by user or sweep."""
            if user_held is not None and uid is not None and w.uid is not None and w.uid != uid:
                return user_held(w.uid), user_held(uid)
            return w.held(self.kind), holding

        def rank(w: Waiter) -> int:
            """Return what the waiter's user holds in all: the poorest user goes first."""
            if user_held is None or uid is None:
                return 0
            return user_held(w.uid if w.uid is not None else uid)

        poorer = sorted((w for w in waiting
                         if w.wants == self.kind and w.since <= self.freed_wall
                         and (standing(w)[0] < standing(w)[1] or standing(w) == (0, 0))
                         and (w.sweep, w.since) not in self.passed_up
                         and self.strikes.get(w.user, 0) < PASS_LIMIT),
                        key=lambda w: (rank(w), w.held(self.kind), w.uid == uid, w.since))
        if not poorer:
            return None
        self.gave_way_to = poorer[0]
        return poorer[0]


class Notice:
    """Our own sweep's notice: posted while its next job waits, withdrawn after."""

    def __init__(self, lock_dir: Path, sweep_id: str, user: str) -> None:
        self.lock_dir = Path(lock_dir)
        self.name = f"{PREFIX}{sweep_id}"
        self.sweep_id = sweep_id
        self.user = user
        self.fd: int | None = None
        self.said: dict = {}

    def post(self, holding: int, cpus: int = 0, wants: str = GPUS) -> None:
        """Say that we wait for `wants`, holding `holding` GPUs and `cpus` CPU tokens; a new
        wait starts a new `since`."""
        if self.fd is None:
            self.fd = leasedir.own_locked_file(self.lock_dir, self.name)  # None: try later
            if self.fd is None:
                return  # a notice is advice: a bad file must not stop the sweep
            self.said = {"sweep": self.sweep_id, "since": time.time()}
        said = {**self.said, "holding": holding, "cpus": cpus, "wants": wants}
        if said != self.said:
            self.said = said
            data = json.dumps(said, sort_keys=True).encode() + b"\n"
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))

    def withdraw(self) -> None:
        """End the wait: remove the file while still holding it, so no reader sees it free."""
        if self.fd is None:
            return
        folder = leasedir.own_folder(self.lock_dir)
        if folder is not None:
            try:
                os.unlink(folder / self.name)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = None


class SweepTurns:
    """One sweep's side of the turns: its wait notice, its windows for GPUs and for CPUs, and
    the slot files its last ended job gave back. `held()` says how many GPUs and CPU tokens
    the sweep's running jobs hold (placement.Placer knows)."""

    def __init__(self, lock_dir: Path, sweep_id: str, user: str,
                 held: Callable[[], tuple[int, int]]) -> None:
        self.lock_dir = Path(lock_dir)
        self.sweep_id = sweep_id
        self.held = held
        self.notice = Notice(self.lock_dir, sweep_id, user)
        self.windows = {GPUS: Turns(GPUS, lambda w: self._took(w, "gpu.")),
                        CPUS: Turns(CPUS, lambda w: self._took(w, "cpu."))}
        self.wait_since: float | None = None  # monotonic; None: not waiting
        self.freed: tuple[Path, ...] = ()
        self.deferred_at: float | None = None  # monotonic: when this wait first let one ahead
        self.deferred_to: Waiter | None = None
        self.line_strikes: dict[str, int] = {}  # user -> waits let ahead that took nothing

    def released(self, freed: Sequence[Path], gpus: bool, cpus: bool) -> None:
        """Note what a job of ours gave back as it ended; a window opens for each kind of
        which we now hold fewer."""
        self.freed = tuple(freed)
        now = time.monotonic()
        for kind, fewer in ((GPUS, gpus), (CPUS, cpus)):
            if fewer:
                self.windows[kind].freed(now)

    def freed_holders(self, prefix: str) -> list[dict]:
        """Return the lease metadata of whoever holds a slot file our last job gave back."""
        names = [p.name for p in self.freed if p.name.startswith(prefix)]
        return [slot.meta for slot in holders.read_slots(self.lock_dir, names) if slot.held]

    def _took(self, waiter: Waiter, prefix: str) -> bool:
        """Return whether the waiter's sweep now holds a slot file our last job gave back."""
        return any(meta.get("sweep") == waiter.sweep and meta.get("user") == waiter.user
                   for meta in self.freed_holders(prefix))

    def waits(self, wants: str) -> None:
        """Post our wait notice once the wait has lasted a moment; most end within one job."""
        now = time.monotonic()
        if self.wait_since is None:
            self.wait_since = now
        if now - self.wait_since >= NOTICE_AFTER_S:
            self.notice.post(*self.held(), wants)

    def done_waiting(self) -> None:
        self.wait_since = None
        self.notice.withdraw()

    def granted(self) -> None:
        """A job of ours got what it needs: the wait is over, and what we freed is not ours
        to leave any more."""
        self.done_waiting()
        self.deferred_at = self.deferred_to = None
        for turns in self.windows.values():
            turns.close()

    def user_totals(self, waiting: list[Waiter], kind: str) -> Callable[[int], int] | None:
        """Return what each user of `waiting` and ours holds in all (by uid), read from the
        users' own lease metadata (machine/house.py); None when only our own user waits."""
        me = os.getuid()
        if not any(w.uid is not None and w.uid != me for w in waiting):
            return None
        locks = holders.HeldLocks()
        totals = {uid: house.held_by(self.lock_dir, uid, locks)
                  for uid in {w.uid for w in waiting if w.uid is not None} | {me}}

        def user_held(uid: int) -> int:
            held = totals.get(uid, house.Held(0, 0))
            return held.cpus if kind == CPUS else held.gpus
        return user_held

    def rival(self, kind: str, holding: int) -> Waiter | None:
        """Return the sweep to leave what we just freed of `kind` to, or None to take it."""
        turns = self.windows[kind]
        now = time.monotonic()
        if not turns.window_open(now):
            return None  # the common case costs no look at the lease directory
        if self.freed_holders("cpu." if kind == CPUS else "gpu."):
            turns.close(judge=False)  # held again, by the waiter or whoever came first
            return None
        waiting = waiters(self.lock_dir, but=self.sweep_id)
        rival = turns.rival(waiting, holding, now, self.user_totals(waiting, kind), os.getuid())
        if rival is not None:
            # We still want what we leave, so we wait from now on, and say so at once: when
            # the rival's job ends, it leaves the GPU back to us (a rival only gives way
            # after freeing something itself, so our notice never makes it leave this one).
            # Posted a poll later, the notice could come after a short job of the rival's
            # had ended and been followed by its next.
            self.wait_since = now - NOTICE_AFTER_S
            self.waits(kind)
        return rival

    def ahead(self, holding: int, taking: int) -> Waiter | None:
        """Return a sweep to let take the `taking` GPUs we just got hold of first, or None to
        keep them.

        For GPUs that came free without a job of ours freeing them (another user's sweep
        ended, or a job of another tool did): a waiting sweep goes first if its user holds
        fewer GPUs in all than ours, or, of the same standing by user, the sweep holds fewer
        than ours. Equals do not: first come, first served (the order of waits would not do,
        as a sweep that gives a GPU way waits from then on, and would be let go first with
        the GPU it gives away). Not while our own window is open: then `rival` decides. One
        wait of ours lets others go first for at most YIELD_S in all, and a user whose waits
        let that pass without taking anything PASS_LIMIT times is not let ahead again.
        """
        now = time.monotonic()
        if self.windows[GPUS].freed_at is not None:
            return None
        if self.deferred_at is not None and now - self.deferred_at >= YIELD_S:
            passed, self.deferred_to = self.deferred_to, None
            if passed is not None and (passed.sweep, passed.since) in {
                    (w.sweep, w.since) for w in waiters(self.lock_dir, but=self.sweep_id)}:
                self.line_strikes[passed.user] = self.line_strikes.get(passed.user, 0) + 1
            return None
        waiting = [w for w in waiters(self.lock_dir, but=self.sweep_id) if w.wants == GPUS
                   and self.line_strikes.get(w.user, 0) < PASS_LIMIT]
        if not waiting:
            return None
        user_held = self.user_totals(waiting, GPUS) or (lambda uid: 0)
        me = os.getuid()

        def standing(w: Waiter) -> tuple[int, int]:
            return user_held(w.uid if w.uid is not None else me), w.held(GPUS)

        first = min(waiting, key=lambda w: (standing(w), w.since))
        # Our user's total counts the leases we just took; the line is as it was before.
        if standing(first) >= (max(user_held(me) - taking, 0), holding):
            return None
        self.deferred_at = self.deferred_at or now
        self.deferred_to = first
        return first
