"""`launch results` on hand-built run directories: numbers, text, CSV, JSON and the plot."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.commands import sweep as sweeping
from launcher.errors import UserError
from launcher.rundir.layout import SweepPaths
from launcher.rundir.names import split_target
from launcher.show import plot, results
from launcher.show.results_render import render_results

ROOT = Path(__file__).parents[2]
SWEEP = "demo-20261122-193455"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (job id, params, state, result or None, epochs of metrics written)
JOBS = [
    ("a-s0-1a2b3c4d", {"model": "alexnet", "optimizer.lr": 0.01, "seed": 0},
     "finished", {"test_accuracy": 0.50, "test_loss": 1.4}, 3),
    ("a-s1-2b3c4d5e", {"model": "alexnet", "optimizer.lr": 0.01, "seed": 1},
     "finished", {"test_accuracy": 0.52, "test_loss": 1.3}, 3),
    ("a-s2-3c4d5e6f", {"model": "alexnet", "optimizer.lr": 0.01, "seed": 2},
     "finished", {"test_accuracy": 0.54, "test_loss": 1.2}, 3),
    ("b-s0-4d5e6f70", {"model": "alexnet", "optimizer.lr": 0.001, "seed": 0},
     "finished", {"test_accuracy": 0.41, "test_loss": 1.9}, 3),
    ("b-s1-5e6f7081", {"model": "alexnet", "optimizer.lr": 0.001, "seed": 1},
     "failed", None, 0),
    ("b-s2-6f708192", {"model": "alexnet", "optimizer.lr": 0.001, "seed": 2},
     "running", None, 1),
    ("c-s0-708192a3", {"model": "resnet9", "optimizer.lr": 0.01, "seed": 0},
     None, None, 0),
]

GOLDEN = """\
sweep demo-20261122-193455: 7 jobs (4 finished, 1 failed, 1 running, 1 pending)

job            model    optimizer.lr  seed  state     test_acc  test_loss  done  wall_s  device
a-s0-1a2b3c4d  alexnet  0.01             0  finished    0.5000     1.4000   3/3    12.0  cpu
a-s1-2b3c4d5e  alexnet  0.01             1  finished    0.5200     1.3000   3/3    12.0  cpu
a-s2-3c4d5e6f  alexnet  0.01             2  finished    0.5400     1.2000   3/3    12.0  cpu
b-s0-4d5e6f70  alexnet  0.001            0  finished    0.4100     1.9000   3/3    12.0  cpu
b-s1-5e6f7081  alexnet  0.001            1  failed           -          -     -       -  -
b-s2-6f708192  alexnet  0.001            2  running          -          -   1/3       -  -
c-s0-708192a3  resnet9  0.01             0  pending          -          -     -       -  -

per configuration, over seeds (n = seeds with a result / jobs):
model    optimizer.lr    n  test_acc mean +- std  test_loss mean +- std
alexnet  0.01          3/3      0.5200 +- 0.0200       1.3000 +- 0.1000
alexnet  0.001         1/3           0.4100 +- -            1.9000 +- -
resnet9  0.01          0/1                     -                      -

other metrics (--metric KEY shows one; --csv and --json have all):
  train_loss, val_accuracy, val_loss, train_accuracy, lr, images_per_s
"""


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_sweep(root: Path, sweep_id: str = SWEEP, jobs=JOBS) -> Path:
    """Write a run directory by hand, the way the supervisor and the jobs leave it."""
    d = root / sweep_id
    write_json(d / "sweep.json", {
        "format": "launch-sweep/1", "sweep_id": sweep_id, "name": "demo", "executor": "local",
        "created": 1.0, "user": "alice", "host": "athena", "runs_dir": str(root),
        "grid_keys": ["model", "optimizer.lr", "seed"],
        "jobs": [{"id": job_id, "params": params} for job_id, params, *_ in jobs],
    })
    for job_id, params, state, result, epochs in jobs:
        jd = d / "jobs" / job_id
        write_json(jd / "spec.json", {"model": params["model"], "seed": params["seed"]})
        if state is not None:
            write_json(jd / "state.json", {"state": state, "attempt": 1, "runs": 1})
        if result is not None:
            write_json(jd / "result.json", {
                "status": "finished", "seed": params["seed"], "epochs_done": 3,
                "wall_time_s": 12.0, "device": "cpu", **result})
        lines = [
            {"epoch": k, "epochs": 3, "train_loss": 2.0 / k,
             "val_accuracy": 0.1 * k + params["seed"] / 100, "val_loss": 2.0,
             "train_accuracy": 0.5, "lr": 0.01, "images_per_s": 100.0, "elapsed_s": 4.0 * k,
             "time": 1000.0 + k}
            for k in range(1, epochs + 1)
        ]
        if lines:
            (jd / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


def mean_std(values: list[float]) -> tuple[float, float]:
    """Sample mean and standard deviation, written out so the test does not share code."""
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    make_sweep(root)
    monkeypatch.setenv("LAUNCH_RUNS_DIR", str(root))
    return root


def test_rows_and_per_configuration_mean_std(runs):
    table = results.collect_results(SweepPaths(runs / SWEEP))
    assert [j.job_id for j in table.jobs] == [j[0] for j in JOBS]  # plan order
    assert [j.state for j in table.jobs] == [
        "finished", "finished", "finished", "finished", "failed", "running", "pending"]
    assert table.param_keys == ("model", "optimizer.lr", "seed")
    assert table.config_keys == ("model", "optimizer.lr")
    assert table.finished() == 4
    a, b, c = table.configs
    assert a.params == {"model": "alexnet", "optimizer.lr": 0.01}
    acc_mean, acc_std = mean_std([0.50, 0.52, 0.54])
    loss_mean, loss_std = mean_std([1.4, 1.3, 1.2])
    assert (a.n, a.test_accuracy.mean, a.test_accuracy.std) == (
        3, pytest.approx(acc_mean), pytest.approx(acc_std))
    assert a.test_loss.mean == pytest.approx(loss_mean)
    assert a.test_loss.std == pytest.approx(loss_std)
    assert (b.n, b.test_accuracy.mean, b.test_accuracy.std) == (1, 0.41, None)
    assert len(b.job_ids) == 3
    assert (c.n, c.test_accuracy.mean, c.test_loss.mean) == (0, None, None)
    running = table.jobs[5]
    assert (running.epochs_done, running.test_accuracy) == (1, None)  # progress from metrics


def test_text_table_matches_golden(runs):
    assert render_results(results.collect_results(SweepPaths(runs / SWEEP))) == GOLDEN


def test_unfinished_result_is_not_averaged(tmp_path):
    jobs = [("a-s0-11111111", {"model": "m", "optimizer.lr": 0.1, "seed": 0}, "running", None, 1),
            ("a-s1-22222222", {"model": "m", "optimizer.lr": 0.1, "seed": 1}, "pending", None, 0)]
    d = make_sweep(tmp_path, "x-20260101-000000", jobs)
    # a crashed job's result and a torn one must not count
    failed = {"status": "failed", "test_accuracy": 1.0}
    write_json(d / "jobs" / "a-s0-11111111" / "result.json", failed)
    (d / "jobs" / "a-s1-22222222" / "result.json").write_text('{"status": "finished", "test_acc')
    table = results.collect_results(SweepPaths(tmp_path / "x-20260101-000000"))
    assert table.finished() == 0
    text = render_results(table)
    assert "no finished job yet in sweep x-20260101-000000" in text
    assert "mean +- std" not in text
    for job_id in ("a-s0-11111111", "a-s1-22222222"):  # once every job ended, not "yet"
        write_json(d / "jobs" / job_id / "state.json", {"state": "failed"})
    text = render_results(results.collect_results(SweepPaths(tmp_path / "x-20260101-000000")))
    assert "no finished job in sweep x-20260101-000000: nothing to average" in text
    # what no job varies goes to one line; columns of "-" only (no device yet) just go
    assert "\nevery job: model=m, optimizer.lr=0.1\n" in text and "device" not in text
    assert results.results_json(table)["configs"][0]["test_accuracy"] == {
        "n": 0, "mean": None, "std": None}


def test_csv_has_one_row_per_job(runs):
    text = results.results_csv(results.collect_results(SweepPaths(runs / SWEEP)))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["job_id", "model", "optimizer.lr", "state", "seed", "epochs_done",
                             "wall_time_s", "device", "num_threads", "test_accuracy", "test_loss",
                             "train_loss", "val_accuracy", "val_loss", "train_accuracy", "lr",
                             "images_per_s"]
    assert [r["job_id"] for r in rows] == [j[0] for j in JOBS]
    assert rows[1]["test_accuracy"] == "0.52" and rows[1]["optimizer.lr"] == "0.01"
    assert rows[4]["state"] == "failed" and rows[4]["test_accuracy"] == ""
    acc = [float(r["test_accuracy"]) for r in rows[:3]]
    assert mean_std(acc)[0] == pytest.approx(0.52)


def test_json_has_stable_keys(runs):
    out = results.results_json(results.collect_results(SweepPaths(runs / SWEEP)))
    assert list(out) == ["format", "sweep_id", "name", "param_keys", "config_keys",
                         "metric_keys", "sorted_by", "finished", "jobs", "configs"]
    assert out["format"] == "launch-results/1" and out["finished"] == 4
    assert list(out["jobs"][0]) == ["job_id", "params", "state", "seed", "test_accuracy",
                                    "test_loss", "epochs_done", "wall_time_s", "device",
                                    "num_threads", "metrics"]
    first = out["configs"][0]
    assert list(first) == ["params", "job_ids", "n", "test_accuracy", "test_loss", "metrics",
                           "num_threads"]
    assert first["metrics"]["test_loss"] == first["test_loss"]
    assert first["test_loss"]["std"] == pytest.approx(mean_std([1.4, 1.3, 1.2])[1])
    assert out["configs"][1]["test_accuracy"] == {"n": 1, "mean": 0.41, "std": None}
    assert json.loads(json.dumps(out)) == out


def test_cli_json_csv_and_prefix(runs, capsys):
    assert main(["results", "demo", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sweep_id"] == SWEEP and len(out["jobs"]) == 7
    assert main(["results", "demo", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("job_id,model,optimizer.lr,state")
    assert main(["results", "nosuch"]) == 2
    assert "no sweep matches 'nosuch'" in capsys.readouterr().err


def test_plot_writes_png(runs, tmp_path, capsys):
    png = tmp_path / "curves.png"
    assert main(["results", SWEEP, "--json", "--plot", str(png)]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # the plot note goes to stderr, so stdout stays JSON
    assert f"wrote learning curves to {png}" in captured.err
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    with pytest.raises(UserError, match="folder .* does not exist"):
        paths = SweepPaths(runs / SWEEP)
        plot.plot_results(paths, results.collect_results(paths), tmp_path / "missing" / "x.png")


def test_plot_without_metrics_is_a_clear_error(tmp_path):
    jobs = [("a-s0-11111111", {"model": "m", "optimizer.lr": 0.1, "seed": 0}, None, None, 0)]
    make_sweep(tmp_path, "x-20260101-000000", jobs)
    with pytest.raises(UserError, match="no metrics yet"):
        paths = SweepPaths(tmp_path / "x-20260101-000000")
        plot.plot_results(paths, results.collect_results(paths), tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_missing_matplotlib_says_how_to_install(runs, tmp_path, monkeypatch, capsys):
    # None in sys.modules makes `import matplotlib...` raise ImportError, as if not installed
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["results", SWEEP, "--plot", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err == ("launch: error: matplotlib is not installed: pip install matplotlib "
                   "(in a checkout: pip install -e '.[plot]')\n")
    assert not (tmp_path / "c.png").exists()


def test_results_and_logs_import_neither_torch_nor_matplotlib():
    code = ("import sys, launcher.commands.results, launcher.commands.logs; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def demo(tmp_path, monkeypatch) -> str:
    """configs/demo.yaml's run directory as a finished run leaves it (numbers made up)."""
    monkeypatch.setenv("LAUNCH_RUNS_DIR", str(tmp_path / "demo-runs"))
    monkeypatch.chdir(tmp_path)
    sweep, plans = sweeping.load_plan(str(ROOT / "configs" / "demo.yaml"), [])
    paths = sweeping.create_run_dir(sweep, plans, "local")
    for n, p in enumerate(plans):
        jd = paths.job(p.job_id).dir
        epochs = p.spec["epochs"]
        write_json(jd / "state.json", {"state": "finished"})
        write_json(jd / "result.json", {
            "status": "finished", "seed": p.spec["seed"], "epochs_done": epochs,
            "test_accuracy": 0.99 + n / 1000, "test_loss": 0.0045 / (n + 1),
            "wall_time_s": 3.1 * epochs, "device": "cpu"})
        (jd / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": k, "epochs": epochs}) + "\n" for k in range(1, epochs + 1)))
    return paths.sweep_id


def test_demo_table_fits_and_names_every_column_once(demo):
    text = render_results(results.collect_results(SweepPaths.of(demo)))
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100, text
    header = lines[4].split()
    assert header == ["job", "epochs", "model", "repeat", "seed", "test_acc", "test_loss",
                      "done", "wall_s"], text
    assert lines[1] == "every job: device=cpu"  # so no device column; the state count is above
    assert lines[2].startswith("job: the hash that ends its id")
    rows = [line.split() for line in lines[5:11]]
    for row in rows:  # the epochs a job ran, also where its point did not set them
        job = split_target(f"demo/{row[0]}")[1]
        model, epochs = ("resnet9", "2") if "resnet9" in job else ("tutorial_cnn", "3")
        assert (row[1], row[2], row[-2]) == (epochs, model, f"{epochs}/{epochs}")
    assert {r[3] for r in rows} == {"-", "layer=fc2,max=3,min=1"}
    table = results.collect_results(SweepPaths.of(demo))
    csv_rows = list(csv.DictReader(io.StringIO(results.results_csv(table))))
    assert {r["epochs"] for r in csv_rows} == {"2", "3"}
    assert {r["device"] for r in csv_rows} == {"cpu"}  # CSV keeps every field


def test_values_that_differ_only_past_the_cut_are_never_shown_alike():
    from types import SimpleNamespace

    from launcher.show import results_render

    opts = [{"name": "sgd", "lr": 0.01, "nesterov": flag, "momentum": 0.9,
             "weight_decay": 0.0005} for flag in (False, True)]
    assert len({results_render.fmt_cell(o) for o in opts}) == 1  # cut in the middle alike
    jobs = [SimpleNamespace(values={"optimizer": o}, seed=0, state="finished", device="cpu")
            for o in opts]
    table = SimpleNamespace(jobs=jobs, config_keys=("optimizer",))
    same = results_render.constant_columns(table)
    assert "optimizer" not in same and same["seed"] == "0"  # the keys really differ
    cells = results_render.value_cells(opts)
    assert len(set(cells)) == 2 and all('"nesterov":' in c for c in cells)


def test_numbers_no_job_has_are_not_columns_of_dashes(tmp_path):
    # a command job that writes no result: no metric columns, and no wall_s column of "-"
    jobs = [(f"lr={n}-0000000{n}", {"model": "m", "optimizer.lr": n, "seed": 0}, "finished",
             None, 0) for n in (1, 2)]
    make_sweep(tmp_path, "x-20260101-000000", jobs)
    text = render_results(results.collect_results(SweepPaths(tmp_path / "x-20260101-000000")))
    header = [line for line in text.splitlines() if line.startswith("job ")][0].split()
    assert header == ["job", "optimizer.lr", "done"], text
    # one job with a test accuracy makes it a column
    d = tmp_path / "x-20260101-000000" / "jobs" / "lr=1-00000001"
    write_json(d / "result.json", {"status": "finished", "test_accuracy": 0.5})
    text = render_results(results.collect_results(SweepPaths(tmp_path / "x-20260101-000000")))
    assert "test_acc" in [line for line in text.splitlines() if line.startswith("job ")][0]
