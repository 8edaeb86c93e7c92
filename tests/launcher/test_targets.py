"""Naming sweeps and jobs on the command line, and what `launch cancel` says, on real run dirs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from rundirs import make_sweep, set_state, state_of

from launcher import cli
from launcher.cli import main
from launcher.commands import cancel as cancelling
from launcher.commands import sweep as sweeping
from launcher.errors import UserError
from launcher.rundir import names
from launcher.rundir.sweepdir import list_sweeps
from launcher.show import sweep_table

ROOT = Path(__file__).parents[2]


@pytest.fixture
def cifar(runs) -> tuple[str, list[str]]:
    """The run directory of configs/cifar.yaml, planned and written, nothing run."""
    sweep, plans = sweeping.load_plan(str(ROOT / "configs" / "cifar.yaml"), [])
    paths = sweeping.create_run_dir(sweep, plans, "local")
    return paths.sweep_id, [p.job_id for p in plans]


def split(text: str) -> tuple[str, str | None]:
    """Return (sweep id, job id or None) that SWEEP[/JOB] names."""
    paths, job = names.split_target(text)
    return paths.sweep_id, job


def only(ids: list[str], start: str) -> str:
    (found,) = [i for i in ids if i.startswith(start)]
    return found


@pytest.mark.parametrize("how", ["id", "hash", "prefix", "substring", "status form"])
def test_a_job_is_named_by(cifar, how, capsys):
    sweep_id, ids = cifar
    job = only(ids, "model=tutorial_cnn_repeat=fc2-1-5_seed=1-")
    text = {"id": job, "hash": job[-8:], "prefix": "model=tutorial_cnn_repeat=fc2-1-5_seed=1",
            "substring": "repeat=fc2-1-5_seed=1",
            "status form": sweep_table.short_id(job, 44)}[how]
    assert ("~" in text) == (how == "status form")
    assert split(f"cifar/{text}") == (sweep_id, job)
    assert main(["logs", f"cifar/{text}"]) == 1  # found; it has not run, so no log yet
    assert f"jobs/{job}/stdout.log (job is pending" in capsys.readouterr().err


def test_a_hash_names_its_job_even_inside_another_id():
    ids = ["lr=0.1_tag=deadbeef-12345678", "lr=0.2-deadbeef"]
    assert names.match_jobs("deadbeef", ids) == ["lr=0.2-deadbeef"]
    assert names.match_jobs("lr=0.", ids) == ids
    assert names.match_jobs("lr=0.1_t~345678", ids) == ["lr=0.1_tag=deadbeef-12345678"]
    assert names.match_jobs("tag~345", ids) == []  # a status form spans the whole id
    assert names.match_jobs("nosuch", ids) == []


def test_a_name_ending_where_a_piece_ends_wins_over_a_longer_value():
    ids = ["model=resnet9_seed=1-aaaaaaaa", "model=resnet9_seed=10-bbbbbbbb",
           "model=resnet9_seed=11-cccccccc"]
    assert names.match_jobs("model=resnet9_seed=1", ids) == ids[:1]
    assert names.match_jobs("seed=1", ids) == ids[:1]
    assert names.match_jobs("seed=", ids) == ids  # no piece ends there: every match


def test_several_matches_are_listed_with_how_to_pick_one(cifar):
    sweep_id, ids = cifar
    with pytest.raises(UserError) as err:
        split("cifar/resnet9")
    lines = str(err.value).splitlines()
    matching = [i for i in ids if "resnet9" in i]
    assert len(matching) > names.JOB_CANDIDATES_SHOWN  # so the list is cut
    assert lines[0] == f"{len(matching)} jobs of sweep {sweep_id} match 'resnet9':"
    assert lines[1:9] == [f"  {i}" for i in matching[:8]]
    assert lines[9] == f"  ... and {len(matching) - 8} more"
    hint = lines[10]
    assert hint.startswith("name one by more of its id, or by its hash")
    assert split(hint.split()[-1]) == (sweep_id, matching[0])
    with pytest.raises(UserError, match=r"(?s)^6 jobs .*match 'model=resnet9_s':\n(  .*\n){6}"
                                        r"name one"):
        split("cifar/model=resnet9_s")


def test_no_match_lists_some_jobs_and_sweeps_newest_first(cifar, tmp_path):
    sweep_id, ids = cifar
    with pytest.raises(UserError) as err:
        split("cifar/nosuch")
    lines = str(err.value).splitlines()
    assert lines[0] == f"no job of sweep {sweep_id} matches 'nosuch'; it has {len(ids)}:"
    assert lines[1:9] == [f"  {i}" for i in ids[:8]]
    root = tmp_path / "runs"
    for n, name in enumerate(["old-1", "new-2"]):
        make_sweep(name, [], root)
        os.utime(root / name, (2e9 + n, 2e9 + n))
    with pytest.raises(UserError, match=rf"newest first: new-2, old-1, {sweep_id}\)$"):
        names.resolve_sweep("nosuch")


def test_the_job_names_in_readme_and_help_name_one_job(cifar):
    sweep_id, ids = cifar
    readme = (ROOT / "README.md").read_text()
    texts = re.findall(r"cifar/([^\s`)]+)", readme + cli.EPILOG + "".join(cli.EXAMPLES.values()))
    named = [t for t in texts if t not in ("JOB", "resnet9")]
    assert len(named) >= 4
    for text in named:
        assert split(f"cifar/{text}")[1] in ids
    assert "`cifar/resnet9`" in readme  # the ambiguous example, said to list its matches
    with pytest.raises(UserError, match="jobs of sweep"):
        split("cifar/resnet9")
    assert re.search(r"model=resnet9_seed=1-[0-9a-f]{8}", readme).group() in ids


def fake_sweep(root: Path, states: list[str | None]) -> tuple[str, list[str]]:
    """A local sweep whose jobs are in states (None: never ran), with no supervisor."""
    ids = [f"n={i}-{i:08x}" for i in range(len(states))]
    paths = make_sweep("s-20260101-000000", [(j, {"n": i}, {}) for i, j in enumerate(ids)], root)
    for job_id, state in zip(ids, states, strict=True):
        if state:
            set_state(paths, job_id, state)
    return paths.sweep_id, ids


def test_cancel_on_an_ended_sweep_has_nothing_to_cancel(runs, capsys):
    sweep_id, ids = fake_sweep(runs, ["finished", "finished", "failed", "cancelled"])
    assert main(["cancel", "s"]) == 0
    assert capsys.readouterr().out == (f"nothing to cancel: all 4 jobs of {sweep_id} have ended "
                                       "(2 finished, 1 failed, 1 cancelled)\n")
    assert not (runs / sweep_id / "cancel").exists()  # a later resume finds no mark
    assert [state_of(sweep_id, j).state for j in ids] == [
        "finished", "finished", "failed", "cancelled"]
    assert main(["cancel", f"s/{ids[2][-8:]}"]) == 0
    assert capsys.readouterr().out == f"nothing to cancel: job {ids[2]} of {sweep_id} " \
                                      "has ended (failed)\n"


def test_cancel_says_what_it_stopped(runs, capsys):
    sweep_id, ids = fake_sweep(runs, ["finished", None, "waiting"])
    assert main(["cancel", "s", "--grace", "0"]) == 0
    assert capsys.readouterr().out == (f"cancelled 2 jobs of {sweep_id} (2 were queued); "
                                       "1 had ended already (1 finished)\n")
    assert [state_of(sweep_id, j).state for j in ids] == [
        "finished", "cancelled", "cancelled"]
    before = {"a": "running", "b": "pending", "c": "timeout"}
    after = {"a": "running", "b": "cancelled", "c": "timeout"}
    assert cancelling.cancel_summary("s-1", None, before, after) == (
        "cancelled 1 job of s-1 (1 was queued); 1 had ended already "
        "(1 timeout); 1 still stopping (`launch status s-1` shows them)")
    assert cancelling.cancel_summary("s-1", "a", before, after) == (
        "cancelling job a of s-1 (it was running); it is still stopping "
        "(`launch status s-1` shows it)")
    done = {**after, "a": "cancelled"}
    assert cancelling.cancel_summary("s-1", "a", before, done) == \
        "cancelled job a of s-1 (it was running)"
    # a finished during the grace: it was not cancelled, and is not counted so
    raced = {**after, "a": "finished"}
    assert cancelling.cancel_summary("s-1", None, before, raced) == (
        "cancelled 1 job of s-1 (1 was queued); 1 had ended already (1 timeout); "
        "1 ended on its own meanwhile (1 finished)")
    assert cancelling.cancel_summary("s-1", "a", before, raced) == \
        "job a of s-1 ended finished before it could be cancelled"
    assert cancelling.nothing_to_cancel("s-1", None, {"a": "finished"}) == \
        "nothing to cancel: the only job of s-1 has ended (1 finished)"


def test_a_sweep_still_being_written_is_not_listed(tmp_path):
    # create_sweep writes into a hidden folder and renames it when every file is there.
    for name in ("done-20261122-000000", ".done-20261122-000001.tmp1234"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.json").write_text("{}")
    (tmp_path / "stray.txt").write_text("")
    assert [p.sweep_id for p in list_sweeps(tmp_path)] == ["done-20261122-000000"]
