"""Naming sweeps and jobs the way people type them: `cifar`, `cifar/resnet9_seed=1`, a hash.

A SWEEP is a sweep id or a prefix of one (the newest match wins); SWEEP/JOB names one job of
it by the rules of `match_jobs`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from launcher.errors import UserError
from launcher.rundir.index import known_sweeps
from launcher.rundir.layout import SweepPaths, runs_dir
from launcher.rundir.sweepdir import read_info

JOB_CANDIDATES_SHOWN = 8
_HASH8 = re.compile(r"[0-9a-f]{8}")


class Picked(NamedTuple):
    """What a SWEEP[/JOB] argument named, and how: by full id (or a job's hash), or not."""

    paths: SweepPaths
    job_id: str | None
    exact: bool  # every part named in full: nothing was guessed from a prefix
    newest: bool  # no SWEEP was given: the user's newest sweep


def resolve_sweep(text: str, runs: Path | None = None) -> SweepPaths:
    """Return the sweep that text names: an exact id, or the newest whose id starts so.

    `launch status cifar` means the newest sweep whose id starts with "cifar", of yours
    where the runs folder has some. Sweeps are looked for in the runs folder and, unless
    runs is given, in the user's index (launcher/rundir/index.py) too.
    """
    found = known_sweeps(runs)
    ids = [p.sweep_id for p in found]
    if text in ids:
        return found[ids.index(text)]
    matches = [p for p in found if p.sweep_id.startswith(text)]
    # In a runs folder shared with colleagues, "cifar" means your newest cifar sweep.
    mine = [p for p in matches if _owner(p) == os.getuid()]
    matches = mine or matches
    if not matches:
        known = ", ".join(reversed(ids[-5:])) or "none"
        where = runs or f"{runs_dir()} or your index (`launch ls`)"
        raise UserError(f"no sweep matches {text!r} in {where} (newest first: {known})")
    return matches[-1]


def newest_sweep(runs: Path | None = None) -> SweepPaths:
    """Return the user's newest sweep (of the runs folder and the index); UserError if none."""
    mine = [p for p in known_sweeps(runs) if _owner(p) == os.getuid()]
    if not mine:
        raise UserError(f"no sweeps of yours in {runs or runs_dir()} or your index: "
                        "`launch sweep FILE` starts one")
    return mine[-1]


def _owner(paths: SweepPaths) -> int | None:
    try:
        return os.lstat(paths.root).st_uid
    except OSError:
        return None


def match_jobs(text: str, ids: Sequence[str]) -> list[str]:
    """Return the job ids that text names, by the first rule any id satisfies.

    The rules, most exact first: the whole id; the 8-hex hash that ends every id; a prefix;
    a substring; the form `launch status` shortens long ids to, where `~` stands for the
    cut middle. The hash comes before the substring rule so that it names one job even when
    the same 8 characters occur inside another id; a prefix or substring that ends where a
    key=value piece ends wins over one that does not (`model=resnet9_seed=1` is not seed=10).
    """
    if text in ids:
        return [text]
    whole = re.compile(rf"(?:^|[_-]){re.escape(text)}(?=[_-]|$)")
    rules = [lambda i: i.startswith(text) and whole.match(i) is not None,
             lambda i: i.startswith(text),
             lambda i: whole.search(i) is not None,
             lambda i: text in i]
    if _HASH8.fullmatch(text):
        rules.insert(0, lambda i: i.endswith("-" + text))
    if "~" in text:  # never in an id: ids are made of [A-Za-z0-9._=-]
        cut = re.compile(".*".join(re.escape(part) for part in text.split("~")))
        rules.append(lambda i: cut.fullmatch(i) is not None)
    for rule in rules:
        found = [i for i in ids if rule(i)]
        if found:
            return found
    return []


def pick_job(sweep_id: str, text: str, ids: Sequence[str]) -> str:
    """Return the one job id of sweep_id that text names; UserError listing candidates if not."""
    found = match_jobs(text.strip(), ids)
    if len(found) == 1:
        return found[0]
    if found:
        head = f"{len(found)} jobs of sweep {sweep_id} match {text!r}:"
        hint = f"name one by more of its id, or by its hash: {sweep_id}/{found[0][-8:]}"
    else:
        head = f"no job of sweep {sweep_id} matches {text!r}; it has {len(ids)}:"
        hint = "name a job by its id, a part of it, or its 8-hex hash"
    listed = found or list(ids)
    lines = [head, *(f"  {j}" for j in listed[:JOB_CANDIDATES_SHOWN])]
    if len(listed) > JOB_CANDIDATES_SHOWN:
        lines.append(f"  ... and {len(listed) - JOB_CANDIDATES_SHOWN} more")
    raise UserError("\n".join([*lines, hint]))


def pick_target(text: str | None, runs: Path | None = None) -> Picked:
    """Return what "SWEEP" or "SWEEP/JOB" names (see match_jobs); None: the newest sweep."""
    if not text:
        return Picked(newest_sweep(runs), None, False, True)
    sweep_text, _, job_text = text.partition("/")
    paths = resolve_sweep(sweep_text, runs)
    exact = sweep_text == paths.sweep_id
    if not job_text:
        return Picked(paths, None, exact, False)
    job_id = pick_job(paths.sweep_id, job_text, read_info(paths).job_ids)
    exact = exact and job_text.strip() in (job_id, job_id[-8:])
    return Picked(paths, job_id, exact, False)


def split_target(text: str | None, runs: Path | None = None) -> tuple[SweepPaths, str | None]:
    """Return (sweep, job id or None) from "SWEEP" or "SWEEP/JOB" (see match_jobs)."""
    picked = pick_target(text, runs)
    return picked.paths, picked.job_id
