"""House rules: the file and its errors, what holds when, and sweeps that keep them.

The rules between two real users (a cap two users' sweeps race for) are in
tests/cotenants/test_rules_between_users.py; here one user's sweeps meet reserved GPUs, a
drain, a window and a broken file, through real supervisors.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from rundirs import view_of
from test_executor import overlapping, runs_of, start, sweep_file, wait_ended, wait_for

from launcher.cli import main
from launcher.config import rules
from launcher.config.yamlsource import SweepFileError
from launcher.machine import fairshare, house, leases
from launcher.machine.cpus import machine_cpus
from launcher.machine.fairshare import Waiter

BROKEN_DIR = Path(__file__).parents[1] / "fixtures" / "rules" / "broken"
BROKEN = sorted(BROKEN_DIR.glob("*.yaml"))
EXPECT = re.compile(r"# (?P<what>.+) \| key: (?P<key>.+) \| line: (?P<line>\d+)$")
MONDAY = datetime(2026, 11, 30)  # a Monday
CPUS = min(2, machine_cpus())


def expectation(path: Path) -> tuple[str, int]:
    match = EXPECT.match(path.read_text().split("\n", 1)[0])
    assert match, f"{path.name}: line 1 must read '# what | key: KEY | line: N'"
    return ("" if match["key"] == "-" else match["key"]), int(match["line"])


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """Return a local time of the week of MONDAY: day 0 is Monday."""
    return (MONDAY + timedelta(days=day)).replace(hour=hour, minute=minute)


def parsed(text: str, name: str = "rules.yaml", tmp: Path | None = None) -> rules.HouseRules:
    path = (tmp or Path("/tmp")) / name
    path.write_text(text)
    found = rules.read_rules(path)
    assert found is not None
    return found


@pytest.fixture
def house_file(tmp_path, monkeypatch):
    """Return a writer of $LAUNCH_RULES: write(dict or text) replaces the file in one rename."""
    path = tmp_path / "rules.yaml"
    monkeypatch.setenv(house.RULES_ENV, str(path))

    def write(content) -> Path:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        os.replace(tmp, path)
        return path
    return write


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_a_broken_rules_file_names_file_line_and_key(path, capsys):
    key, line = expectation(path)
    with pytest.raises(SweepFileError) as info:
        rules.read_rules(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), line, key), str(err)
    assert main(["rules", "--check", str(path)]) == 2
    said = capsys.readouterr().err
    assert said == f"launch: error: {err}\n"


def test_no_job_starts_under_a_broken_rules_file(lab, house_file, capsys, runs):
    for path in BROKEN:
        house_file(path.read_text())
        sweep = sweep_file(lab / "s.yaml", "ruled", {"seed": [0]}, {"cpu_budget": 1,
                                                                    "cpus_per_job": 1})
        assert main(["sweep", str(sweep), "--detach"]) == 2, path.name
        err = capsys.readouterr().err
        key, line = expectation(path)
        assert err.startswith(f"launch: error: {house.rules_path()}:{line}: "), err
        assert main(["status"]) == 0  # status says the rules are broken, and shows the rest
        assert "house rules: BROKEN" in capsys.readouterr().out
    assert not runs.exists() or not any(p for p in runs.iterdir() if not p.name.startswith("."))


def test_no_rules_file_is_no_rules(house_file, capsys):
    assert rules.read_rules() is None
    assert rules.in_force(None, "alice", MONDAY) == house.Caps()
    assert main(["rules"]) == 0
    assert "no house rules" in capsys.readouterr().out


WEEK = """\
max_gpus_per_user: 2
cpu_budget: 8
reserved_gpus: [3]
limits:
  - {days: mon-fri, hours: "09:00-18:00", max_gpus_per_user: 1}
  - {days: fri, hours: "22:00-06:00", drain: true}
users: {alice: {max_gpus_per_user: 4}}
"""


@pytest.mark.parametrize("when, gpus, drain, line", [
    (at(0, 8, 59), 2, False, 1),  # Monday before the window
    (at(0, 9, 0), 1, False, 5),  # its first minute
    (at(0, 17, 59), 1, False, 5),
    (at(0, 18, 0), 2, False, 1),  # the end is not in it
    (at(5, 12), 2, False, 1),  # Saturday noon
    (at(4, 22, 0), 2, True, 1),  # Friday night: the window over midnight starts...
    (at(5, 5, 59), 2, True, 1),  # ...and runs into Saturday morning
    (at(5, 6, 0), 2, False, 1),
    (at(3, 23, 0), 2, False, 1),  # Thursday night is not Friday night
])
def test_what_holds_when(tmp_path, when, gpus, drain, line):
    found = parsed(WEEK, tmp=tmp_path)
    caps = rules.in_force(found, "bob", when)
    assert (caps.max_gpus, caps.drain, caps.cpu_budget, caps.reserved) == (gpus, drain, 8, ("3",))
    assert caps.where["max_gpus_per_user"] == f"rules.yaml:{line}"
    # An exception holds at all times, over the windows.
    assert rules.in_force(found, "alice", when).max_gpus == 4


def test_the_last_matching_window_wins_and_days_wrap(tmp_path):
    found = parsed("limits:\n"
                   "  - {days: fri-mon, max_gpus_per_user: 3}\n"
                   "  - {days: [sun], hours: '10:00-11:00', max_gpus_per_user: 0}\n",
                   tmp=tmp_path)
    assert [rules.in_force(found, "u", at(d, 12)).max_gpus for d in range(7)] == \
        [3, None, None, None, 3, 3, 3]
    assert rules.in_force(found, "u", at(6, 10, 30)).max_gpus == 0


def test_the_status_line_and_never_fits(tmp_path):
    found = parsed(WEEK, tmp=tmp_path)
    line = rules.summary(found, "bob", at(0, 12))
    assert line.startswith("house rules: 2 GPUs per user (1 on mon-fri 09:00-18:00)")
    assert "GPU 3 reserved" in line and "CPU budget 8" in line and "draining" not in line
    assert "draining" in rules.summary(found, "bob", at(4, 23))
    assert "you: max_gpus_per_user 4" in rules.summary(found, "alice", at(0, 12))
    assert rules.never_fits(found, "bob", 2, 1) is None  # 2 GPUs: outside the window
    assert "at most 2" in rules.never_fits(found, "bob", 3, 1)
    assert rules.never_fits(found, "alice", 3, 1) is None
    assert "cpu_budget" in rules.never_fits(found, "bob", 1, 9)


def test_a_sweep_that_could_never_start_under_the_rules_is_refused(lab, house_file, capsys):
    house_file({"max_gpus_per_user": 1})
    path = sweep_file(lab / "s.yaml", "big", {"seed": [0]},
                      {"gpus_per_job": 2, "cpu_budget": 1, "cpus_per_job": 1})
    assert main(["sweep", str(path), "--detach"]) == 2
    assert "at most 1 at any time (max_gpus_per_user)" in capsys.readouterr().err


def test_held_by_counts_a_users_gpus_and_cpus_from_their_metadata(lock_dir):
    from launcher.machine import cpus

    lock_dir.mkdir()
    lock_dir.chmod(0o1777)
    uuids = ["GPU-aaaaaaaa", "GPU-bbbbbbbb"]
    meta = {"user": "me", "sweep": "s", "job": "j"}
    packed = [leases.acquire_gpus(uuids[:1], 1, 2, meta, lock_dir) for _ in range(2)]
    alone = leases.acquire_gpus(uuids[1:], 1, 1, meta, lock_dir)
    tokens = cpus.acquire_cpus(1, 1, meta, lock_dir)
    assert house.held_by(lock_dir, os.getuid()) == house.Held(gpus=2, cpus=1)
    for got in [*packed, alone, tokens]:
        for lease in got:
            lease.release()
    assert house.held_by(lock_dir, os.getuid()) == house.Held(0, 0)
    assert house.held_by(lock_dir, os.getuid() + 12345) == house.Held(0, 0)


def test_the_house_lock_is_one_at_a_time_and_says_when_it_cannot_be_had(tmp_path):
    ticks = iter(range(1000))
    with house.CountLock(tmp_path) as first:
        assert first
        slept = []
        late = house.CountLock(tmp_path, wait_s=3, sleep=slept.append, clock=lambda: next(ticks))
        with late as second:
            assert not second
        assert slept  # it tried until its clock said the wait was over
    with house.CountLock(tmp_path) as again:
        assert again


def test_cap_reasons_name_the_rule_and_its_line():
    caps = house.Caps(max_gpus=2, max_cpus=4, where={"max_gpus_per_user": "rules.yaml:1",
                                                     "max_cpus_per_user": "rules.yaml:2"})
    assert house.cap_reason(caps, house.Held(1, 0), 1, 2) is None
    assert house.cap_reason(caps, house.Held(2, 0), 1, 2) == (
        "you hold 2 GPUs and a job needs 1 more: the house limit is 2 GPUs per user "
        "(rules.yaml:1)")
    assert "4 CPUs per user (rules.yaml:2)" in house.cap_reason(caps, house.Held(0, 3), 0, 2)
    assert house.cap_reason(caps, house.Held(2, 0), 0, 1) is None  # a CPU job needs no GPU


def test_between_users_the_poorest_user_goes_first_and_before_our_own_sweeps():
    turns = fairshare.Turns()
    turns.freed(0.0)
    ours = Waiter("mine-2", "me", 1.0, 0, uid=1)
    theirs = Waiter("theirs", "bob", 5.0, 0, uid=2)
    richer = Waiter("rich", "carol", 0.5, 0, uid=3)
    held = {1: 0, 2: 0, 3: 2}
    # Our sweep freed its only GPU: our user and Bob hold none; Carol holds 2 elsewhere.
    assert turns.rival([ours, richer, theirs], 0, 1.0, held.get, 1) == theirs
    turns = fairshare.Turns()
    turns.freed(0.0)
    held = {1: 3, 2: 2, 3: 2}  # our user holds 3 over other sweeps: both others come first
    assert turns.rival([ours, richer, theirs], 0, 1.0, held.get, 1) == richer
    turns = fairshare.Turns()
    turns.freed(0.0)
    held = {1: 1, 2: 1, 3: 1}  # all equal and not zero: nobody is let in
    assert turns.rival([richer, theirs], 1, 1.0, held.get, 1) is None


def test_a_reserved_gpu_is_never_leased_and_leave_free_counts_the_rest(lab, house_file,
                                                                      capsys):
    house_file({"reserved_gpus": [3]})
    path = sweep_file(lab / "s.yaml", "res", {"seed": list(range(6))},
                      {"gpus_per_job": 1, "leave_free": 1, "cpu_budget": CPUS, "cpus_per_job": 1})
    sweep_id = start(path)
    view = wait_ended(sweep_id)
    assert {j.state for j in view.jobs} == {"finished"}
    used = {r["cuda"] for runs in runs_of(sweep_id).values() for r in runs}
    reserved = "GPU-56a67f8c-c5b2-0e00-4086-4d180666f3a4"  # index 3 of idle4.json
    assert used and reserved not in used
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "GPU 3 reserved" in out  # the rules line
    lines = {line[:3]: line for line in out.splitlines() if line[:1] == "["}
    assert lines["[3]"].endswith("| reserved by the house rules")
    assert not any("reserved" in lines[f"[{i}]"] for i in range(3))
    # The same sweep asking for all four GPUs could never start: said at once.
    big = sweep_file(lab / "b.yaml", "big", {"seed": [0]},
                     {"gpus_per_job": 4, "cpu_budget": 1, "cpus_per_job": 1})
    assert main(["sweep", str(big), "--detach"]) == 2
    assert "reserved_gpus" in capsys.readouterr().err


def test_drain_holds_new_jobs_and_an_edit_takes_effect_at_the_next_placement(lab, house_file,
                                                                            capsys):
    house_file("drain: true\n")
    path = sweep_file(lab / "s.yaml", "drained", {"seed": [0, 1]},
                      {"gpus_per_job": 1, "cpu_budget": 1, "cpus_per_job": 1})
    sweep_id = start(path)
    waiting = wait_for("a job held by the drain", lambda: [
        j for j in view_of(sweep_id).jobs if j.state == "waiting"])
    assert "the box is draining (rules.yaml:1)" in waiting[0].reason
    assert main(["status"]) == 0
    assert "draining: no new job starts" in capsys.readouterr().out
    house_file("drain: [\n")  # broken now: still nothing starts, and it says why
    wait_for("the broken file to be said", lambda: [
        j for j in view_of(sweep_id).jobs if "house rules file is broken" in (j.reason or "")])
    assert not any(j.state == "running" for j in view_of(sweep_id).jobs)
    house_file("drain: false\n")
    assert [j.state for j in wait_ended(sweep_id).jobs] == ["finished", "finished"]


@pytest.mark.skipif(machine_cpus() < 2, reason="with one CPU token, jobs never overlap anyway")
def test_a_window_in_force_caps_the_users_gpus(lab, house_file):
    # A window around every moment: the cap it sets holds whenever the sweep places.
    house_file({"max_gpus_per_user": 4,
                "limits": [{"days": "mon-sun", "hours": "00:00-24:00", "max_gpus_per_user": 1}]})
    path = sweep_file(lab / "s.yaml", "capped", {"seed": list(range(4))},
                      {"gpus_per_job": 1, "cpu_budget": CPUS, "cpus_per_job": 1},
                      job={"seconds": 0.3})
    sweep_id = start(path)
    view = wait_ended(sweep_id)
    assert {j.state for j in view.jobs} == {"finished"}
    every = [r for runs in runs_of(sweep_id).values() for r in runs]
    assert not overlapping(every)  # one GPU at a time, though the CPUs allowed two jobs


def test_a_rules_file_read_once_is_kept_checked_and_any_edit_is_read_again(house_file,
                                                                           monkeypatch):
    from launcher.config import rulescache, yamlsource

    path = house_file("max_gpus_per_user: 2\nreserved_gpus: [3]\nlimits:\n"
                      "  - {days: mon-fri, hours: '09:00-18:00', max_gpus_per_user: 1}\n"
                      "users: {alice: {max_cpus_per_user: 4}}\n")
    first = rules.read_rules()
    assert rulescache.cache_file(path).stat().st_mode & 0o077 == 0  # the user's own

    def no_yaml(*args, **kwargs):
        raise AssertionError("read the YAML again")
    with monkeypatch.context() as m:
        m.setattr(yamlsource, "read_yaml", no_yaml)
        kept = rules.read_rules()
    assert kept == first and kept.windows[0].days == frozenset(range(5))
    assert rules.in_force(kept, "alice", at(0, 10)) == rules.in_force(first, "alice", at(0, 10))
    # An edit of the same size, in place, is another version of the file: read again.
    path.write_text(path.read_text().replace("max_gpus_per_user: 2", "max_gpus_per_user: 3"))
    assert rules.read_rules().values["max_gpus_per_user"] == 3
    # Whatever the cache holds that is not what it wrote is a miss, never an error.
    for garbage in ("{", '{"format": "launch-rules-cache/1"}', "[]"):
        rulescache.cache_file(path).write_text(garbage)
        assert rules.read_rules().values["max_gpus_per_user"] == 3
    entry = json.loads(rulescache.cache_file(path).read_text())
    entry["rules"]["windows"] = [{"days": "x"}]
    rulescache.cache_file(path).write_text(json.dumps(entry))
    assert rules.read_rules().windows[0].text == "mon-fri 09:00-18:00"
    # A broken file is never kept: every reader says it is broken.
    house_file("drain: [\n")
    for _ in range(2):
        with pytest.raises(SweepFileError):
            rules.read_rules()


def test_status_on_a_box_with_rules_reads_no_yaml_once_they_are_kept(lab, house_file):
    house_file({"max_gpus_per_user": 1, "reserved_gpus": [2]})
    check = ("import io, sys, contextlib; from launcher.cli import main\n"
             "out = io.StringIO()\n"
             "with contextlib.redirect_stdout(out): code = main(['status'])\n"
             "print(code, 'yaml' in sys.modules, 'launcher.machine.gpus' in sys.modules,"
             " 'reserved by the house rules' in out.getvalue())")
    said = [subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    assert said[0] == ["0", "True", "False", "True"], said  # the first reads the file
    assert said[1] == ["0", "False", "False", "True"], said  # the next ones the cache
