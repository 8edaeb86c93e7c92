"""`launch results` with a script's own metrics: columns, --metric, CSV/JSON, threads, the plot.

A command job writes whatever numbers it likes into its result and metrics lines; the run
directories here are made by hand (tests/rundirs.py) the way such a script leaves them.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from rundirs import make_sweep, set_state

from launcher.cli import main
from launcher.errors import UserError
from launcher.rundir.layout import SweepPaths
from launcher.show import plot, results
from launcher.show.results_render import render_results

SWEEP = "mt-20260101-000000"
F1 = {(0.1, 0): 0.70, (0.1, 1): 0.72, (0.1, 2): 0.74, (0.01, 0): 0.80, (0.01, 1): 0.84}
BLEU = {(0.1, 0): 20.0, (0.1, 1): 22.0, (0.1, 2): 24.0, (0.01, 0): 30.0, (0.01, 1): 31.0}


def job_id(lr: float, seed: int) -> str:
    return f"lr={lr}_seed={seed}-{abs(hash((lr, seed))) % 16**8:08x}"


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Sample mean and standard deviation, written out so the test does not share code."""
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@pytest.fixture
def script_sweep(runs) -> SweepPaths:
    """A command job's sweep: lr 0.1 x 3 seeds, lr 0.01 x 2 seeds; f1 and bleu per job."""
    jobs = [(job_id(lr, s), {"lr": lr, "seed": s},
             {"command": ["python", "train.py", "--lr", str(lr)], "lr": lr, "seed": s})
            for lr, s in F1]
    paths = make_sweep(SWEEP, jobs, runs, grid_keys=("lr", "seed"))
    for (lr, s), f1 in F1.items():
        job = paths.job(job_id(lr, s))
        set_state(paths, job.job_id, "finished", num_threads=2)
        write_json(job.result_json, {"status": "finished", "f1": f1, "bleu": BLEU[lr, s],
                                     "tokenizer": "bpe", "ok": True})
        lines = [{"epoch": k, "epochs": 3, "train_loss": 1.0 / k + s / 10 + lr,
                  "val_f1": f1 * k / 3, "time": 100.0 + k} for k in (1, 2, 3)]
        job.metrics_jsonl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return paths


def test_every_numeric_key_of_a_scripts_result_gets_a_column_and_a_mean(script_sweep):
    table = results.collect_results(script_sweep)
    assert table.finished() == 5
    first, second = table.configs
    assert first.stats["f1"].mean == pytest.approx(mean_std([0.70, 0.72, 0.74])[0])
    assert first.stats["f1"].std == pytest.approx(mean_std([0.70, 0.72, 0.74])[1])
    assert second.stats["bleu"].mean == pytest.approx(30.5)
    # the last metrics line's numbers count too; strings and booleans are not metrics
    assert second.stats["train_loss"].mean == pytest.approx(mean_std(
        [1 / 3 + 0 + 0.01, 1 / 3 + 0.1 + 0.01])[0])
    assert "tokenizer" not in table.metric_keys and "ok" not in table.metric_keys
    assert "epoch" not in table.metric_keys and "time" not in table.metric_keys
    text = render_results(table)
    assert "nothing to average" not in text, text
    header = [line for line in text.splitlines() if line.startswith("job ")][0].split()
    assert header == ["job", "lr", "seed", "f1", "bleu", "done"], text
    assert "f1 mean +- std" in text and "bleu mean +- std" in text
    f1_mean, f1_std = mean_std([0.70, 0.72, 0.74])
    assert f"{f1_mean:.4f} +- {f1_std:.4f}" in text
    assert "30.5000 +- 0.7071" in text
    # the metrics line's keys are named, not shown: the table stays narrow
    assert text.endswith("\nother metrics (--metric KEY shows one; --csv and --json have all):"
                         "\n  train_loss, val_f1\n"), text


def test_csv_and_json_carry_every_metric(script_sweep):
    table = results.collect_results(script_sweep)
    rows = list(csv.DictReader(io.StringIO(results.results_csv(table))))
    assert list(rows[0]) == ["job_id", "lr", "state", "seed", "epochs_done", "wall_time_s",
                             "device", "num_threads", "f1", "bleu", "train_loss", "val_f1"]
    assert [float(r["f1"]) for r in rows] == list(F1.values())
    assert rows[0]["num_threads"] == "2"
    out = results.results_json(table)
    assert out["metric_keys"] == ["f1", "bleu", "train_loss", "val_f1"]
    assert out["jobs"][3]["metrics"]["bleu"] == 30.0
    assert out["configs"][1]["metrics"]["bleu"]["mean"] == pytest.approx(30.5)
    assert out["configs"][0]["metrics"]["f1"]["n"] == 3


def test_metric_picks_the_sort_order_best_first(script_sweep, capsys):
    assert main(["results", SWEEP, "--metric", "f1"]) == 0
    text = capsys.readouterr().out
    assert "sorted by f1, highest first" in text
    lines = text.splitlines()
    jobs = [line.split()[0] for line in lines if line.startswith("lr=")]
    by_f1 = sorted(F1, key=lambda k: -F1[k])
    assert jobs == [job_id(*k) for k in by_f1], text
    configs = [line.split()[0] for line in lines[lines.index(
        "per configuration, over seeds (n = seeds with a result / jobs):") + 2:]
        if line[:1].isdigit()]
    assert configs == ["0.01", "0.1"], text
    # a loss is best when low; --order says otherwise
    assert main(["results", SWEEP, "--metric", "train_loss", "--csv"]) == 0
    losses = [float(r["train_loss"]) for r in csv.DictReader(io.StringIO(
        capsys.readouterr().out))]
    assert losses == sorted(losses)
    assert main(["results", SWEEP, "--metric", "train_loss", "--order", "high", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sorted_by"] == {"metric": "train_loss", "highest_first": True}
    values = [j["metrics"]["train_loss"] for j in out["jobs"]]
    assert values == sorted(values, reverse=True)
    # the sorted metric is a column of the table even when it came from the metrics lines
    assert main(["results", SWEEP, "--metric", "val_f1"]) == 0
    assert "val_f1 mean +- std" in capsys.readouterr().out


def test_an_unknown_metric_is_a_user_error_listing_the_metrics(script_sweep, capsys):
    assert main(["results", SWEEP, "--metric", "f2"]) == 2
    err = capsys.readouterr().err
    assert err == (f"launch: error: no metric 'f2' in sweep {SWEEP} "
                   "(its jobs have: f1, bleu, train_loss, val_f1)\n")
    assert main(["results", SWEEP, "--order", "low"]) == 2
    assert "--order says which end of --metric comes first" in capsys.readouterr().err


def test_jobs_of_one_configuration_with_different_thread_counts_are_named(script_sweep):
    a, b = job_id(0.1, 1), job_id(0.1, 2)
    set_state(script_sweep, a, "finished", num_threads=4)
    # the built-in job records what it ran with in its result; that wins over the state
    result = json.loads(script_sweep.job(b).result_json.read_text())
    write_json(script_sweep.job(b).result_json, {**result, "env": {"num_threads": 4}})
    text = render_results(results.collect_results(script_sweep))
    assert ("jobs of one configuration ran with different thread counts (on CPU the weights "
            "depend on it):") in text, text
    assert f"  lr=0.1: 2 threads: {job_id(0.1, 0)}; 4 threads: {a}, {b}" in text
    assert "lr=0.01:" not in text  # both of its jobs ran with 2 threads


def test_without_differing_threads_there_is_no_note(script_sweep):
    assert "thread counts" not in render_results(results.collect_results(script_sweep))


def curves_of(fig, label: str):
    """Return the mean line and the band drawn for a configuration's legend label."""
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    bands = [c for c in ax.collections if c.get_gid() == f"band {label}"]
    return line, bands


def test_plot_shows_mean_and_a_band_of_one_std_per_configuration(script_sweep, tmp_path):
    table = results.collect_results(script_sweep)
    fig = plot.results_figure(script_sweep, table, metric="val_f1")
    assert len(fig.axes) == 1 and fig.axes[0].get_ylabel() == "val_f1"
    line, (band,) = curves_of(fig, "lr=0.1 (3 seeds)")
    for k, y in zip(line.get_xdata(), line.get_ydata(), strict=True):
        values = [F1[0.1, s] * k / 3 for s in (0, 1, 2)]
        assert y == pytest.approx(mean_std(values)[0])
        # the band's outline at this epoch runs from mean - std to mean + std
        ys = [v[1] for v in band.get_paths()[0].vertices if v[0] == pytest.approx(k)]
        m, s = mean_std(values)
        assert min(ys) == pytest.approx(m - s) and max(ys) == pytest.approx(m + s)
    # the legend is in words and beside the axes, not over the curves
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["lr=0.1 (3 seeds)", "lr=0.01 (2 seeds)"]
    fig.draw_without_rendering()
    legend_box = fig.legends[0].get_window_extent()
    assert not legend_box.overlaps(fig.axes[0].get_window_extent())
    png = tmp_path / "f1.png"
    assert main(["results", SWEEP, "--metric", "val_f1", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_result_only_metric_draws_mean_and_std_per_configuration(script_sweep):
    table = results.collect_results(script_sweep)
    fig = plot.results_figure(script_sweep, table, metric="bleu")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([22.0, 30.5])
    (bars,) = [c for c in ax.collections if c.get_gid() == "std"]
    segments = bars.get_segments()
    assert [y for s in segments for y in (s[0][1], s[1][1])] == pytest.approx(
        [22.0 - 2.0, 22.0 + 2.0, 30.5 - math.sqrt(0.5), 30.5 + math.sqrt(0.5)])


def test_plot_of_an_unknown_metric_is_a_user_error(script_sweep, tmp_path):
    table = results.collect_results(script_sweep)
    with pytest.raises(UserError, match="no metric 'nope'"):
        plot.plot_results(script_sweep, table, tmp_path / "x.png", metric="nope")


def test_a_one_epoch_sweep_shows_its_std_as_an_error_bar(script_sweep):
    for lr, s in F1:  # a smoke test's sweep: every job stopped after its first epoch
        path = script_sweep.job(job_id(lr, s)).metrics_jsonl
        path.write_text(path.read_text().splitlines()[0] + "\n")
    table = results.collect_results(script_sweep)
    fig = plot.results_figure(script_sweep, table, metric="val_f1")
    _, (bar,) = curves_of(fig, "lr=0.1 (3 seeds)")
    ((_, low), (_, high)), = bar.get_segments()
    m, s = mean_std([F1[0.1, seed] / 3 for seed in (0, 1, 2)])
    assert (low, high) == (pytest.approx(m - s), pytest.approx(m + s))
    assert list(fig.axes[0].get_xticks()) == [1]
