"""Sweep files: the broken-file corpus, overrides, defaults, YAML details, hostile values."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from launcher import cli
from launcher.config.ids import make_sweep_id
from launcher.config.plan import plan_jobs, render_plan, resolved_yaml
from launcher.config.sweepfile import load_sweep
from launcher.config.yamlsource import CMDLINE, SweepFileError
from launcher.machine.cpus import default_cpu_budget

BROKEN_DIR = Path(__file__).parents[1] / "fixtures" / "sweeps" / "broken"
BROKEN = sorted(BROKEN_DIR.glob("*.yaml"))
EXPECT = re.compile(r"# (?P<what>.+) \| key: (?P<key>.+) \| line: (?P<line>\d+)$")


def expectation(path: Path) -> tuple[str, int]:
    """Return (key, line) the file's first-line comment promises; key '-' means none."""
    match = EXPECT.match(path.read_bytes().split(b"\n", 1)[0].decode())
    assert match, f"{path.name}: line 1 must read '# what | key: KEY | line: N'"
    return ("" if match["key"] == "-" else match["key"]), int(match["line"])


def load_and_plan(path: Path, overrides: tuple[str, ...] = ()):
    sweep = load_sweep(path, overrides)
    return sweep, plan_jobs(sweep)


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_corpus_is_large_enough():
    assert len(BROKEN) >= 25


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_file_names_file_line_and_key(path):
    key, line = expectation(path)
    with pytest.raises(SweepFileError) as info:
        load_and_plan(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), line, key), str(err)
    prefix = f"{path}:{line}: " + (f"key '{key}': " if key else "")
    assert str(err).startswith(prefix), str(err)
    assert "\n" not in str(err)


def test_broken_files_exit_2_and_create_no_run_directory(runs, tmp_path, capsys):
    for path in BROKEN:
        key, line = expectation(path)
        assert cli.main(["sweep", str(path), "--detach"]) == 2, path.name
        err = capsys.readouterr().err
        assert err.startswith(f"launch: error: {path}:{line}: "), err
        assert f"key '{key}'" in err or not key, err
    assert sorted(os.listdir(tmp_path)) == [], "a broken sweep file must not create anything"


BASE = """\
name: base
job:
  model: resnet9
  dataset: synthetic
  epochs: 3
  optimizer: {name: sgd, lr: 1e-3}
grid:
  model: [alexnet, resnet9]
seeds: 2
"""


def test_defaults_are_filled(tmp_path):
    sweep = load_sweep(write(tmp_path, "job: {model: resnet9}\n", "my-sweep.yaml"))
    assert sweep.name == "my-sweep" and sweep.executor == "local"
    assert (sweep.max_retries, sweep.timeout_min, sweep.grid, sweep.points) == (0, None, {}, ())
    res = sweep.resources
    assert res.cpu_budget == default_cpu_budget() >= 1
    assert res.cpus_per_job == min(2, res.cpu_budget)
    assert (res.gpus_per_job, res.jobs_per_gpu, res.device) == (1, 1, "auto")
    assert (sweep.slurm.gpus_per_node, sweep.slurm.cpus_per_task) == (1, res.cpus_per_job)


def test_slurm_defaults_follow_resources(tmp_path):
    sweep = load_sweep(write(tmp_path, "job: {model: resnet9}\nresources: {device: cpu, "
                             "cpu_budget: 8, cpus_per_job: 3}\nslurm: {time_min: 5}\n"))
    assert (sweep.slurm.gpus_per_node, sweep.slurm.cpus_per_task, sweep.slurm.time_min) == (
        0, 3, 5)


def test_yaml_details(tmp_path):
    text = BASE + "resources: &r {cpu_budget: 4}\nslurm:\n  <<: {time_min: 9, qos: low}\n" \
                  "  qos: high\n"
    sweep = load_sweep(write(tmp_path, text))
    assert sweep.job["optimizer"]["lr"] == 0.001  # YAML 1.2 float, not the string "1e-3"
    assert (sweep.slurm.time_min, sweep.slurm.qos) == (9, "high")  # merge key; explicit wins
    assert sweep.grid == {"model": ["alexnet", "resnet9"], "seed": [0, 1]}


def test_missing_file(tmp_path):
    with pytest.raises(SweepFileError) as info:
        load_sweep(tmp_path / "nope.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read it")


def test_overrides(tmp_path):
    path = write(tmp_path, BASE)
    sweep = load_sweep(path, ["job.epochs=1", "grid.optimizer.lr=0.1,0.01", "seeds=1",
                              "resources.cpu_budget=4", "name=a-b.c_d", "max_retries=2"])
    assert sweep.job["epochs"] == 1 and sweep.name == "a-b.c_d" and sweep.max_retries == 2
    assert sweep.grid == {"model": ["alexnet", "resnet9"], "optimizer.lr": [0.1, 0.01],
                          "seed": [0]}
    assert sweep.resources.cpu_budget == 4
    assert sweep.overrides[0] == "job.epochs=1"
    # job.KEY=a,b sweeps KEY; job.KEY=V pins it, taking it out of the grid.
    sweep = load_sweep(path, ["job.model=inception", "job.seed=0,3", "job.augment=true"])
    assert sweep.grid == {"seed": [0, 3]} and sweep.job["model"] == "inception"
    assert sweep.job["augment"] is True
    assert [p.params for p in plan_jobs(sweep)] == [{"seed": 0}, {"seed": 3}]
    # A pinned key wins over points too; a point it empties is the job as it is.
    sweep = load_sweep(write(tmp_path, BASE + "points: [{epochs: 5}, {augment: true, epochs: 6,"
                             " repeat.max: 2}]\n"), ["job.epochs=1", "job.repeat=null"])
    assert sweep.points == ({}, {"augment": True})
    assert {(p.spec["epochs"], p.spec["repeat"]) for p in plan_jobs(sweep)} == {(1, None)}


@pytest.mark.parametrize("override, key, words", [
    ("job.epochs=ten", "job.epochs", "integer"),
    ("grid.model=alexnet,resnet99", "grid.model", "resnet99"),
    ("nmae=x", "nmae", "allowed: name, executor"),
    ("resources.gpus=1", "resources.gpus", "unknown key"),
    ("job.epochs", "job.epochs", "KEY=VALUE"),
    ("job.epochs=[1", "job.epochs", "cannot parse"),
    ("job.optimizer.lr.x=1", "job.optimizer.lr.x", "not a mapping"),
])
def test_override_errors_name_the_command_line(tmp_path, override, key, words):
    with pytest.raises(SweepFileError) as info:
        load_and_plan(write(tmp_path, BASE), (override,))
    assert (info.value.file, info.value.line, info.value.key) == (CMDLINE, None, key)
    assert str(info.value).startswith(f"{CMDLINE}: key '{key}': ") and words in str(info.value)


def test_seeds_given_twice_on_the_command_line_is_an_error_not_an_order(tmp_path):
    path = write(tmp_path, BASE)
    for pair in (("grid.seed=5,6", "seeds=1"), ("seeds=1", "grid.seed=5,6")):
        with pytest.raises(SweepFileError, match="set twice"):
            load_sweep(path, pair)
    assert load_sweep(path, ("grid.seed=5,6",)).grid["seed"] == [5, 6]  # over the file's seeds


def test_a_file_error_caused_by_a_pinned_override_names_the_override(tmp_path):
    path = write(tmp_path, BASE.replace("  model: [alexnet, resnet9]\n", "  augment: [true]\n")
                 + "points: [{model: tutorial_cnn},\n"
                 "  {model: tutorial_cnn, repeat: {layer: fc2, min: 1, max: 2}}]\n")
    load_and_plan(path)  # fine as written
    with pytest.raises(SweepFileError) as info:
        load_and_plan(path, ("job.model=resnet9",))
    # The file's point is where it fails, but the command line is why.
    assert info.value.file == str(path) and info.value.key == "points[1].repeat.layer"
    assert "the command line sets job.model=resnet9 for every job" in str(info.value)


def test_resolved_yaml_loads_back_to_the_same_sweep(tmp_path):
    sweep = load_sweep(write(tmp_path, BASE + "points: [{augment: true}, {augment: false}]\n"),
                       ["job.epochs=1", "resources.exclude_gpus=3"])
    again = load_sweep(write(tmp_path, resolved_yaml(sweep), "resolved.yaml"))
    fields = ("name", "executor", "job", "grid", "points", "resources", "slurm",
              "max_retries", "timeout_min")
    assert [getattr(again, f) for f in fields] == [getattr(sweep, f) for f in fields]
    assert [p.job_id for p in plan_jobs(again)] == [p.job_id for p in plan_jobs(sweep)]


HOSTILE = ["a b", "it's \"quoted\"", "$(touch {marker})", "x; touch {marker}", "line\nbreak",
           "`touch {marker}`"]


def test_hostile_names_and_values_stay_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    values = [v.format(marker=marker) for v in HOSTILE]
    file = write(tmp_path, "job: {command: [echo, '{msg}'], msg: x}\n")
    with pytest.raises(SweepFileError) as info:  # a name names a folder: never a path
        load_sweep(file, ["name=" + "\n".join(values)])
    assert "must be a plain name of letters, digits, '.', '_' and '-'" in str(info.value)
    sweep = load_sweep(file, ["grid.msg=" + json.dumps(values)])
    plans = plan_jobs(sweep)
    assert [p.command for p in plans] == [["echo", v] for v in values]
    assert re.fullmatch(r"[A-Za-z0-9._-]+-\d{8}-\d{6}", make_sweep_id(sweep.name, 0.0))
    table = render_plan(sweep, plans)
    assert len(table.splitlines()) == len(values) + 4  # a newline in a value stays escaped
    again = load_sweep(write(tmp_path, resolved_yaml(sweep), "resolved.yaml"))
    assert again.name == sweep.name and again.grid == sweep.grid
    assert not marker.exists()
    assert sorted(os.listdir(tmp_path)) == ["resolved.yaml", "sweep.yaml"]
