"""What planning refuses, and says how to fix: seeds a command never sees, overrides no
placeholder uses, list values, keys that exclude each other, names that are paths, keys in
the wrong section, and sweeps this machine can never run (the same with --dry-run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from snapshots import NVML_FIXTURES

from launcher import contract
from launcher.cli import main
from launcher.config.plan import plan_jobs
from launcher.config.sweepfile import (
    NOTIFY_RULES,
    RESOURCE_RULES,
    SLURM_RULES,
    TOP_KEYS,
    load_sweep,
)
from launcher.config.yamlsource import SweepFileError


def write(tmp_path: Path, doc: dict | str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def planned(tmp_path: Path, doc: dict | str, overrides=()):
    sweep = load_sweep(write(tmp_path, doc), overrides)
    return sweep, plan_jobs(sweep)


def refused(tmp_path: Path, doc: dict | str, overrides=()) -> str:
    with pytest.raises(SweepFileError) as info:
        planned(tmp_path, doc, overrides)
    return str(info.value)


TRAIN = {"command": ["python", "train.py", "--lr", "{lr}"], "lr": 0.1}


def test_seeds_a_command_never_sees_are_an_error_that_says_how(tmp_path):
    text = refused(tmp_path, {"job": TRAIN, "seeds": 3})
    assert text.startswith(f"{tmp_path / 's.yaml'}:")
    assert "key 'seeds': 3 seeds, but the command uses neither {seed} nor $LAUNCH_SEED" in text
    assert "seed_from_env: true" in text
    with_placeholder = {**TRAIN, "command": [*TRAIN["command"], "--seed", "{seed}"]}
    assert len(planned(tmp_path, {"job": with_placeholder, "seeds": 3})[1]) == 3
    shell = {"command": ["sh", "-c", "python train.py --seed $LAUNCH_SEED"]}
    assert len(planned(tmp_path, {"job": shell, "seeds": 2})[1]) == 2
    assert len(planned(tmp_path, {"job": {**TRAIN, "seed_from_env": True}, "seeds": 2})[1]) == 2
    assert len(planned(tmp_path, {"job": TRAIN})[1]) == 1  # one seed: nothing to tell apart
    assert "must be true or false" in refused(tmp_path, {"job": {**TRAIN, "seed_from_env": 1}})


def test_every_job_is_given_its_seed():
    env = contract.job_env({}, sweep_id="s", job_id="j", job_dir=Path("/j"), num_workers=0,
                           num_threads=1, gpus=[], seed=contract.job_seed({"seed": 7}))
    assert env["LAUNCH_SEED"] == "7"
    assert contract.job_seed({"command": ["x"]}) == 0


@pytest.mark.usefixtures("lab")
def test_a_command_job_reads_its_seed_from_the_environment(tmp_path):
    from test_executor import start, wait_ended

    from launcher.rundir.names import resolve_sweep

    path = write(tmp_path, {"name": "seeded", "seeds": 2, "job": {"command": [
        "sh", "-c", 'echo "$LAUNCH_SEED" > "$LAUNCH_JOB_DIR/seed"']},
        "resources": {"gpus_per_job": 0, "cpus_per_job": 1, "cpu_budget": 1}})
    sweep_id = start(path)
    view = wait_ended(sweep_id)
    paths = resolve_sweep(sweep_id)
    assert sorted((paths.job(j.job_id).dir / "seed").read_text() for j in view.jobs) == \
        ["0\n", "1\n"]


def test_an_override_no_placeholder_uses_is_an_error_naming_the_placeholders(tmp_path):
    job = {**TRAIN, "out": "results", "command": [*TRAIN["command"], "--out", "{out}"]}
    text = refused(tmp_path, {"job": job}, ["job.lrr=0.5"])
    assert text == ("<command line>: key 'job.lrr': no placeholder of the command uses it, so "
                    "it would change nothing but the job ids (allowed: {lr}, {out})")
    assert "key 'job.lrr'" in refused(tmp_path, {"job": job}, ["job.lrr=0.5,0.6"])
    unused = {**job, "note": "x"}
    assert "key 'grid.note'" in refused(tmp_path, {"job": unused}, ["grid.note=a,b"])
    sweep, plans = planned(tmp_path, {"job": job}, ["job.lr=0.5", "job.seed=3"])
    assert plans[0].command[3] == "0.5" and plans[0].spec["seed"] == 3
    assert len(planned(tmp_path, {"job": job}, ["job.lr=0.5,0.6"])[1]) == 2


def test_brackets_give_one_list_value_and_a_comma_list_sweeps(tmp_path):
    job = {"model": "ensemble", "dataset": "synthetic", "epochs": 1}
    sweep, plans = planned(tmp_path, {"job": job}, ["job.members=[alexnet,inception]"])
    assert sweep.grid == {} and plans[0].spec["members"] == ["alexnet", "inception"]
    sweep, plans = planned(tmp_path, {"job": job}, ["job.model=alexnet,resnet9"])
    assert sweep.grid == {"model": ["alexnet", "resnet9"]} and len(plans) == 2
    # each value of a swept list must be a list: the error names the key as it was typed
    text = refused(tmp_path, {"job": job}, ["job.members=alexnet,inception"])
    assert "key 'job.members'" in text and "grid.members" not in text


def test_keys_that_exclude_each_other_and_names_that_are_paths(tmp_path):
    text = refused(tmp_path, {"job": {"model": "alexnet", "command": ["python", "x.py"]}})
    assert "key 'job.model'" in text and "job.command" in text and "not both" in text
    text = refused(tmp_path, {"name": "../../../tmp/escaped", "job": {"model": "alexnet"}})
    assert "key 'name': must be a plain name of letters, digits, '.', '_' and '-'" in text
    assert "'../../../tmp/escaped'" in text
    sweep = load_sweep(write(tmp_path, {"job": {"model": "alexnet"}}, "my sweep (2).yaml"))
    assert sweep.name == "my-sweep-2"  # a file's name the user did not write is cleaned


@pytest.mark.parametrize("doc, overrides, hint", [
    ({"job": TRAIN, "lr": 0.2}, [], "job.lr"),
    ({"job": {"model": "alexnet"}, "epochs": 2}, [], "job.epochs"),
    ({"job": {"model": "alexnet"}, "momentum": 0.5}, [], "job.optimizer.momentum"),
    ({"job": {"model": "alexnet"}, "gpus_per_job": 2}, [], "resources.gpus_per_job"),
    ({"job": {"model": "alexnet"}}, ["partition=gpu"], "slurm.partition"),
])
def test_an_unknown_top_level_key_says_where_it_belongs(tmp_path, doc, overrides, hint):
    assert f"unknown key; did you mean {hint}?" in refused(tmp_path, doc, overrides)


def test_keys_lists_every_key_with_its_default(capsys):
    from launcher.config import keys

    assert set(keys.RESOURCES) == set(RESOURCE_RULES) and set(keys.SLURM) == set(SLURM_RULES)
    assert set(keys.TOP) == set(TOP_KEYS) and set(keys.NOTIFY) == set(NOTIFY_RULES)
    assert main(["keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for key in [*TOP_KEYS, *(f"resources.{k}" for k in RESOURCE_RULES),
                *(f"slurm.{k}" for k in SLURM_RULES), "job.command", "job.seed_from_env",
                "job.epochs", "job.optimizer.lr"]:
        assert any(line.startswith(f"{key}: ") for line in lines), key
    epochs = next(line for line in lines if line.startswith("job.epochs: "))
    assert epochs.startswith("job.epochs: an integer >= 1") and "(default 22); passes" in epochs
    # what a key allows is read from the rule that checks it, so the two cannot drift apart
    assert keys.allows(RESOURCE_RULES["gpus_per_job"]) == "an integer >= 0 and <= 64"
    assert keys.allows(RESOURCE_RULES["device"]) == "auto | cpu | gpu"
    assert keys.allows(SLURM_RULES["mem_gb"]).endswith(", or null")
    assert "resources.gpus_per_job: an integer >= 0 and <= 64 (default 1); GPUs each job " \
           "holds; 0 runs jobs on the CPU" in lines


MACHINE = [
    ({"gpus_per_job": 5}, "idle4", "resources.gpus_per_job is 5, but at most 4 of this "
     "machine's 4 GPUs can ever be given"),
    ({"device": "gpu"}, "nodriver", "this sweep needs GPUs (resources.device: gpu)"),
    ({"gpu_memory_mib": 10**7}, "idle4", "resources.gpu_memory_mib is 10000000, but the "
     "largest GPU this sweep may use has"),
    ({"exclude_gpus": [9]}, "idle4", "resources.exclude_gpus names GPU 9, but this machine "
     "has 4 GPUs (0, 1, 2, 3)"),
    ({"include_gpus": ["GPU-ffffffff"]}, "idle4", "at most 0 of this machine's 4 GPUs can "
     "ever be given (0 after include_gpus"),
]


@pytest.mark.parametrize("dry", [True, False])
@pytest.mark.parametrize("resources, box, says", MACHINE)
def test_a_sweep_this_machine_can_never_run_is_refused_before_it_starts(
        runs, tmp_path, monkeypatch, capsys, resources, box, says, dry):
    monkeypatch.setenv("LAUNCH_NVML_SNAPSHOT", str(NVML_FIXTURES / f"{box}.json"))
    path = write(tmp_path, {"job": {"command": [sys.executable, "-c", "pass"]},
                            "resources": {"cpus_per_job": 1, "cpu_budget": 1, **resources}})
    assert main(["sweep", str(path), *(["--dry-run"] if dry else ["--detach"])]) == 2
    assert says in capsys.readouterr().err
    assert not runs.exists() or not list(runs.iterdir())


@pytest.mark.parametrize("dry", [True, False])
@pytest.mark.parametrize("program, says", [
    ("pythn", "job.command: no program 'pythn' on PATH"),
    ("./train.sh", "train.sh is not an executable file"),
])
def test_a_command_whose_program_is_not_there_is_refused(lab, capsys, program, says, dry):
    path = write(lab, {"job": {"command": [program, "x"]},
                       "resources": {"gpus_per_job": 0, "cpus_per_job": 1, "cpu_budget": 1}})
    assert main(["sweep", str(path), *(["--dry-run"] if dry else ["--detach"])]) == 2
    assert says in capsys.readouterr().err
    assert main(["sweep", str(path), "--executor", "slurm", "--dry-run"]) == 0  # nodes differ
    assert says in capsys.readouterr().err  # but it says so
