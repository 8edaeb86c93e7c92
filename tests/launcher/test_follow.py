"""Following a sweep: the lines it prints for a scripted run directory, and for a real sweep.

The scripted tests play a sweep's life as its supervisor would write it, one step per pause
of the follower (its sleep is the next step), so every line is known.
"""

from __future__ import annotations

import io
import json
import re
import sys

import pytest
import yaml
from rundirs import make_sweep, set_state
from test_executor import start, wait_for

from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import read_state
from launcher.rundir.sweepdir import read_info
from launcher.show import follow

SWEEP = "demo-20261122-221414"
A, B = "a-s0-00000001", "b-s1-00000002"
STARTED = 1795376000.0
WAIT = "CPU budget spent: 2 of 2 CPUs held by alice 2; a job needs 2"
OUTPUT = "\n".join([*(f"step {i}" for i in range(8)), "50%|####  \r100%|########",
                    "RuntimeError: \x1b[31mbad\x1b[0m"])


class Terminal(io.StringIO):
    """What follow writes to, as a terminal: every write kept apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def epoch_line(k: int) -> str:
    return json.dumps({"epoch": k, "epochs": 3, "val_accuracy": k / 10, "elapsed_s": 10.0 * k})


def paths() -> SweepPaths:
    return SweepPaths.of(SWEEP)


def add_metrics(k: int) -> None:
    with open(paths().job(A).metrics_jsonl, "a") as f:
        f.write(epoch_line(k) + "\n")


def running(gpu: int, started: float = STARTED) -> dict:
    return {"attempt": 1, "runs": 1, "gpu_indices": [gpu], "started": started}


def step_1() -> None:
    set_state(paths(), A, "running", **running(0))
    add_metrics(1)
    set_state(paths(), B, "waiting", reason=WAIT)


def step_2() -> None:
    add_metrics(2)
    add_metrics(3)
    set_state(paths(), B, "running", **running(1, STARTED + 30))


def step_3() -> None:
    set_state(paths(), A, "finished", **running(0), ended=STARTED + 30, exit_code=0)
    set_state(paths(), B, "failed", **running(1, STARTED + 30), ended=STARTED + 35, exit_code=3,
              log_tail=OUTPUT)


def steps(*todo):
    """Return a sleep for the follower that runs the next step of todo at each pause."""
    left = list(todo)
    return lambda _s: left.pop(0)()


@pytest.fixture
def scripted(runs, monkeypatch):
    """A sweep of two jobs and no supervisor, at its first step; step_2, step_3 come next."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("LINES", "30")
    make_sweep(SWEEP, [(A, {"seed": 0}, {"epochs": 3}), (B, {"seed": 1}, {"epochs": 3})])
    step_1()


def without_clock(text: str) -> list[str]:
    return [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in text.splitlines()]


def test_piped_output_says_where_then_each_epoch_wait_and_failure(scripted, capsys):
    out = io.StringIO()
    assert follow.follow_sweep(paths(), out=out, sleep=steps(step_2, step_3)) == 1
    assert without_clock(out.getvalue()) == [
        f"sweep {SWEEP}: 2 jobs, runs/{SWEEP}; Ctrl-C stops following, not the sweep",
        f"{A}  running on GPU 0",
        f"{A}  epoch 1/3  val_acc 10.00%  eta 20s",
        f"{B}  waiting: {WAIT}",
        f"{A}  epoch 2/3  val_acc 20.00%  eta 10s",
        f"{A}  epoch 3/3  val_acc 30.00%",
        f"{B}  running on GPU 1",
        f"{A}  finished after 30s, val_acc 30.00%",
        f"{B}  failed after 5s: exit 3",
        "    | step 5",
        "    | step 6",
        "    | step 7",
        "    | 100%|########",
        "    | RuntimeError: bad",
        "    all its output: launch logs " f"{SWEEP}/{B}",
    ]
    err = capsys.readouterr().err
    assert "1 failed, 1 finished" in err and f"launch sweep --resume {SWEEP}" in err


def test_a_terminal_gets_the_events_and_a_table_redrawn_in_place(scripted):
    out = Terminal()
    assert follow.follow_sweep(paths(), out=out, sleep=steps(step_2, step_3)) == 1
    header, *frames = out.writes
    assert header.startswith(f"sweep {SWEEP}: 2 jobs, runs/{SWEEP}; Ctrl-C")
    assert len(frames) == 3
    text = out.getvalue()
    assert "epoch 1/3" not in text, "a terminal shows epochs in the table, not as lines"
    assert re.search(rf"\n  {A}  running    0        1/3   10.00%", frames[0])
    assert re.search(rf"\n  {A}  running    0        3/3   30.00%", frames[1])
    assert f"{B}  failed after 5s: exit 3\n    | step 5\n" in frames[2]
    assert f"launch logs {SWEEP}/{B}" in frames[2]
    for before, after in zip(frames, frames[1:], strict=False):
        # Each redraw goes up exactly as many lines as the last frame had, then clears;
        # no line of a frame may wrap, or going up would land in the wrong place.
        drawn = before.split("\n")[:-1]
        table = drawn[next(i for i, s in enumerate(drawn) if s.startswith(SWEEP)):]
        assert after.startswith(f"\r\x1b[{len(table)}A\x1b[J")
        assert table[-1].startswith("(Ctrl-C") and all(len(line) < 100 for line in table)
    assert frames[2].endswith(f"\n{SWEEP}  local  1 finished, 1 failed\n"), "no Ctrl-C at the end"


def test_a_resumed_sweep_counts_what_had_finished_instead_of_listing_it(scripted):
    step_2()
    step_3()
    set_state(paths(), B, "pending", reason="resumed")
    out = io.StringIO()
    killed = steps(lambda: set_state(paths(), B, "failed", signal=9))
    assert follow.follow_sweep(paths(), out=out, sleep=killed, finished_before={A}) == 1
    assert without_clock(out.getvalue()) == [
        f"sweep {SWEEP}: 2 jobs (1 finished before), runs/{SWEEP}; Ctrl-C stops following, "
        "not the sweep",
        f"{B}  failed: signal 9 (SIGKILL)",
        "    (it printed nothing)",
        f"    all its output: launch logs {SWEEP}/{B}",
    ]


def test_a_retried_job_shows_why_it_stopped(scripted):
    out = io.StringIO()
    retried = steps(lambda: set_state(paths(), A, "pending", **running(0), exit_code=1,
                                      reason="retry after exit 1", log_tail="Killed"), step_3)
    assert follow.follow_sweep(paths(), out=out, sleep=retried) == 1
    lines = without_clock(out.getvalue())
    at = lines.index(f"{A}  pending: retry after exit 1")
    assert lines[at + 1:at + 3] == ["    | Killed", f"    all its output: launch logs {SWEEP}/{A}"]


METRICS_JOB = """\
import json, os, sys, time
code, epochs, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
seconds = seconds if code == 0 else 0.3  # the one that fails does so quickly
path = os.path.join(os.environ["LAUNCH_JOB_DIR"], "metrics.jsonl")
for k in range(1, epochs + 1):
    time.sleep(seconds / epochs)
    line = {"epoch": k, "epochs": epochs, "val_accuracy": k / 10, "elapsed_s": k}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\\n")
    print("epoch", k, "done", flush=True)
sys.exit(code)
"""


@pytest.mark.usefixtures("lab")  # its runs dir, leases and idle 4-GPU box, in tmp_path
def test_following_a_real_sweep_shows_every_epoch_the_wait_and_the_failure(tmp_path):
    script = tmp_path / "metrics_job.py"
    script.write_text(METRICS_JOB)
    # One CPU for two jobs: the second waits (and says why) while the first runs; the
    # supervisor writes a wait down after a second of it.
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "follow",
        "job": {"command": [sys.executable, str(script), "{code}", "{epochs}", "{seconds}"],
                "code": 0, "epochs": 3, "seconds": 2.5},
        "grid": {"code": [0, 3]},
        "resources": {"gpus_per_job": 1, "cpu_budget": 1, "cpus_per_job": 1}}))
    sweep_id = start(path)
    out = io.StringIO()
    assert follow.follow_sweep(SweepPaths.of(sweep_id), refresh_s=0.05, out=out) == 1
    lines = without_clock(out.getvalue())
    ok, bad = (j.id for j in sorted(read_info(SweepPaths.of(sweep_id)).jobs,
                                    key=lambda j: j.params["code"]))
    assert lines[0].startswith(f"sweep {sweep_id}: 2 jobs, runs/{sweep_id}; Ctrl-C")
    for job in (ok, bad):
        assert [line.split("  ")[1] for line in lines if line.startswith(f"{job}  epoch")] == \
            ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert any(line.startswith(f"{bad}  waiting: CPU budget spent") for line in lines)
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{bad}  failed after"))
    assert lines[at].endswith(": exit 3")
    assert lines[at + 1:at + 4] == [f"    | epoch {k} done" for k in (1, 2, 3)]
    assert lines[at + 4] == f"    all its output: launch logs {sweep_id}/{bad}"
    assert any(line.startswith(f"{ok}  finished after ") and line.endswith("val_acc 30.00%")
               for line in lines)


def test_epochs_come_with_their_own_time_and_a_rerun_from_an_older_checkpoint_shows_again(
        tmp_path):
    from types import SimpleNamespace

    job = SweepPaths(tmp_path / "s-1").job("j")
    metrics = job.metrics_jsonl
    metrics.parent.mkdir(parents=True)

    def epochs_done(n: int) -> SimpleNamespace:
        metrics.write_text("".join(json.dumps({"epoch": k, "epochs": 4, "time": 1000.0 + k})
                                   + "\n" for k in range(1, n + 1)))
        return SimpleNamespace(job_id="j", epoch=n)

    shown: dict = {}
    assert [t for t, _ in follow.new_epochs(job, epochs_done(3), shown)] == [1001, 1002, 1003]
    assert follow.new_epochs(job, epochs_done(3), shown) == []
    assert follow.new_epochs(job, epochs_done(1), shown) == []  # rerun from epoch 1's checkpoint
    again = follow.new_epochs(job, epochs_done(3), shown)
    assert [text.split()[1] for _, text in again] == ["2/4", "3/4"]


ONCE_JOB = """\
import os, sys, time
mark = os.path.join(os.environ['LAUNCH_JOB_DIR'], 'x')
print('boom', flush=True)
if not os.path.exists(mark):  # the first run waits for the test's gate, then fails
    open(mark, 'w').close()
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.02)
    sys.exit(3)
"""


@pytest.mark.usefixtures("lab")
@pytest.mark.parametrize("first_look", ["after_it_all", "while_the_first_run_runs"])
def test_a_quick_retry_is_shown_with_why_and_its_log_marks_the_new_run(tmp_path, first_look):
    script, gate = tmp_path / "once.py", tmp_path / "gate"
    script.write_text(ONCE_JOB)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "retry", "max_retries": 1,
        "job": {"command": [sys.executable, str(script), str(gate)], "seed": 0},
        "resources": {"gpus_per_job": 1, "cpu_budget": 1, "cpus_per_job": 1}}))
    sweep = SweepPaths.of(start(path))
    (job,) = read_info(sweep).job_ids

    def retried_and_finished(_s: float = 0) -> None:
        gate.touch()
        wait_for("the retry to finish", lambda: read_state(sweep.job(job)).state == "finished")

    # The follower's looks are placed around the job's life by events, not by the machine's
    # speed: its first look comes after the failure, the retry and its end, or while the
    # first run still runs, the rest happening during its one pause.
    if first_look == "after_it_all":
        retried_and_finished()
        sleep = retried_and_finished
    else:
        wait_for("the first run", lambda: (read_state(sweep.job(job)).state, sweep.job(
            job).stdout_log.exists()) == ("running", True))
        sleep = retried_and_finished
    out = io.StringIO()
    assert follow.follow_sweep(sweep, refresh_s=0.05, out=out, sleep=sleep) == 0
    lines = without_clock(out.getvalue())
    assert lines[0].startswith(f"sweep {sweep.sweep_id}: 1 job, "), lines  # none finished before
    said = [line for line in lines if line.startswith(job)]
    assert f"{job}  attempt 1 failed; retrying" in said, lines
    assert said[-1].startswith(f"{job}  finished"), lines
    assert read_state(sweep.job(job)).log_tail is None  # not the failed run's
    log = sweep.job(job).stdout_log.read_text().splitlines()
    assert log[0] == "boom" and log[1].startswith("[launch] ") and " run 2 starts" in log[1]


def test_a_resumed_run_and_a_retry_say_which_run_they_are():
    from types import SimpleNamespace

    def running(attempt, runs):
        return SimpleNamespace(state="running", gpu_indices=(0,), attempt=attempt, runs=runs,
                               elapsed_s=None, val_accuracy=None, reason=None)

    assert follow.state_text(running(1, 1)) == "running on GPU 0"
    assert follow.state_text(running(2, 2)) == "running on GPU 0 (attempt 2)"
    assert follow.state_text(running(1, 3)) == \
        "running on GPU 0 (run 3, from its checkpoint if it wrote one)"


@pytest.mark.parametrize("looks, retry_lines", [
    ([("running", 1, None), ("pending", 1, "retry after exit 3"), ("running", 2, None)], 1),
    ([("pending", 1, "retry after exit 3"), ("running", 2, None)], 1),  # first look: the wait
    ([("running", 1, None), ("finished", 2, None)], 1),                 # all between two looks
    ([("pending", 0, None), ("running", 2, None)], 1),
    ([("finished", 2, None)], 1),                                       # all before the first
    ([("pending", 3, None), ("running", 1, None)], 0),                  # a resumed sweep
    ([("running", 1, None), ("finished", 1, None)], 0),
])
def test_a_retry_is_said_once_whatever_the_follower_saw(looks, retry_lines):
    from types import SimpleNamespace

    seen: dict = {}
    said = []
    for state, attempt, reason in looks:
        job = SimpleNamespace(job_id="j", state=state, attempt=attempt, reason=reason,
                              log_tail="boom" if attempt else None, gpu_indices=(0,), runs=1,
                              elapsed_s=None, val_accuracy=None, epoch=None)
        said += follow.changes(SimpleNamespace(sweep_id="s-1", jobs=[job]), SweepPaths.of("s-1"),
                               seen, {}, False)
    retries = [line for line in said if "retry" in line]
    assert len(retries) == retry_lines, said
    assert ("    | boom" in said) == bool(retry_lines), said
