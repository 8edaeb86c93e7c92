"""Progress within an epoch as status and the follower show it, from a job's progress file."""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from rundirs import make_sweep, set_state

from launcher.rundir.layout import SweepPaths
from launcher.show import follow
from launcher.show.sweep_table import render_sweeps
from launcher.show.views import load_sweep_view

SWEEP = "demo-20261122-221414"
A, B = "a-s0-00000001", "b-s1-00000002"
STARTED = 1795376000.0


def paths() -> SweepPaths:
    return SweepPaths.of(SWEEP)


def write_progress(job: str, batch: int, at: float, epoch: int = 1, eta_s: float = 100.0):
    record = {"epoch": epoch, "epochs": 2, "batch": batch, "batches": 100, "train_loss": 1.5,
              "images_per_s": 312.4, "epoch_eta_s": eta_s / 2, "eta_s": eta_s,
              "elapsed_s": at - STARTED, "time": at}
    paths().job(job).progress_json.write_text(json.dumps(record) + "\n")


@pytest.fixture
def two_jobs(runs):
    make_sweep(SWEEP, [(A, {"seed": 0}, {"epochs": 2}), (B, {"seed": 1}, {"epochs": 2})])
    set_state(paths(), A, "running", attempt=1, runs=1, started=STARTED)
    set_state(paths(), B, "running", attempt=1, runs=1, started=STARTED)
    paths().job(B).spec_json.write_text(json.dumps({"epochs": 2}))  # as a built-in job does


def test_status_shows_the_epoch_in_progress_and_an_eta_before_the_first_epoch_ends(two_jobs):
    write_progress(A, 41, at=STARTED + 50)  # 100 s left when written, 10 s ago
    view = load_sweep_view(paths(), now=STARTED + 60)
    a, b = view.jobs
    assert (a.epoch, a.epoch_fraction, a.eta_s, a.train_loss) == (None, 0.41, 90.0, 1.5)
    assert (b.epoch_fraction, b.eta_s) == (None, None)  # no progress file: as before
    header, *rows = render_sweeps([view], None, one_sweep=True)[1:]
    assert [row.split() for row in rows] == [
        [A, "running", "-", "1/2", "41%", "-", "1m00s", "1m30s"],
        [B, "running", "-", "0/2", "-", "1m00s", "-"]]
    assert rows[0].index("41%") + 3 == header.index("EPOCH") + 5, "the column is wider"


def test_a_progress_file_of_a_finished_epoch_or_an_earlier_run_is_not_shown(two_jobs):
    with open(paths().job(A).metrics_jsonl, "w") as f:  # epoch 1 finished after its record
        f.write(json.dumps({"epoch": 1, "epochs": 2, "elapsed_s": 80.0}) + "\n")
    write_progress(A, 90, at=STARTED + 70)
    write_progress(B, 50, at=STARTED - 5)  # written by the run before this one
    a, b = load_sweep_view(paths(), now=STARTED + 90).jobs
    assert (a.epoch, a.epoch_fraction, a.eta_s) == (1, None, 80.0)  # the metrics' pace
    assert b.epoch_fraction is None
    write_progress(A, 20, at=STARTED + 85, epoch=2, eta_s=40.0)
    a = load_sweep_view(paths(), now=STARTED + 90).jobs[0]
    assert (a.epoch_fraction, a.eta_s) == (0.2, 35.0)
    set_state(paths(), A, "finished", attempt=1, runs=1, started=STARTED, ended=STARTED + 95)
    a = load_sweep_view(paths(), now=STARTED + 99).jobs[0]
    assert (a.epoch_fraction, a.eta_s) == (None, None)


def test_the_follower_prints_progress_at_most_every_30_s_per_job(two_jobs):
    clock = [0.0]
    write_progress(A, 10, at=time.time())  # the follower's view counts the ETA down from now

    def at(t, **batches):
        def step():
            clock[0] = t
            for job, batch in batches.items():
                write_progress({"a": A, "b": B}[job], batch, at=time.time())
        return step

    def end():
        for job in (A, B):
            set_state(paths(), job, "finished", attempt=1, runs=1, started=STARTED,
                      ended=STARTED + 100, exit_code=0)

    looks = [at(10, a=20, b=5), at(29.9, a=30), at(30, a=40, b=15), at(59, b=20),
             at(100), at(101, a=50), end]
    out = io.StringIO()
    assert follow.follow_sweep(paths(), out=out, sleep=lambda _s: looks.pop(0)(),
                               clock=lambda: clock[0]) == 0
    said = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in out.getvalue().splitlines()
            if " epoch " in line]
    # A at 0 s, 30 s (40%, not the 30% of 29.9 s), then not the 40% it still shows at 100 s
    # but its next move, at 101 s; B first at 10 s, then not before 40 s: at 59 s.
    assert [(line.split()[0], line.split()[3]) for line in said] == [
        (A, "10%"), (B, "5%"), (A, "40%"), (B, "20%"), (A, "50%")], said
    assert re.fullmatch(rf"{A}  epoch 1/2 10%  loss 1.5000  312 img/s  eta 1m[34]\ds", said[0])
