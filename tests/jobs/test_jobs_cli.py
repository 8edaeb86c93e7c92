"""`python -m jobs`: bad input exits 2 with one line naming the key and what is allowed."""

import json
import subprocess
import sys

import pytest
from jobhelpers import REPO, job_env, run_job, tiny_spec

from jobs.__main__ import main


@pytest.mark.parametrize("job, names", [
    ({"model": "vgg"}, ["model", "'vgg'", "tutorial_cnn|alexnet|inception|ensemble|resnet9"]),
    ({"optimizer": {"lr": "abc"}}, ["optimizer.lr", "a number > 0", "'abc'"]),
    ({"optimiser": {}}, ["optimiser", "unknown key", "optimizer", "lr_schedule", "grad_noise"]),
    ({"grad_noise": {"mode": "loud"}}, ["grad_noise.mode", "annealed|relative"]),
])
def test_bad_spec_exits_2_naming_key_and_allowed_values(tmp_path, job, names):
    # A real process: the exit code and stderr are what a scheduler and a user see.
    code, out, err = run_job(job, tmp_path / "job")
    assert code == 2
    line = err.strip()
    assert "\n" not in line and line.startswith("jobs: error:")
    assert all(name in line for name in names), line
    assert not (tmp_path / "job").exists()  # rejected before any work started


def test_unreadable_spec_files_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{model: resnet9")
    assert main([str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nope.json" in err and "not valid JSON" in err


def test_check_prints_the_resolved_spec(tmp_path, capsys):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"model": "alexnet"}))
    assert main([str(path), "--check"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["model"] == "alexnet" and spec["optimizer"]["nesterov"] is True
    assert main([str(path)]) == 2  # running needs --out


def test_help_teaches_keys_and_exit_codes():
    proc = subprocess.run([sys.executable, "-m", "jobs", "--help"], cwd=REPO, env=job_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0
    for text in ("--out DIR", "75", "LAUNCH_NUM_WORKERS", "optimizer.lr:", "repeat.eval:"):
        assert text in proc.stdout


def test_cuda_requested_without_gpu_exits_2(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a GPU-less box
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec(device="cuda")))
    assert main([str(spec), "--out", str(tmp_path / "job")]) == 2
    err = capsys.readouterr().err
    assert "device: cuda requested" in err and "auto|cpu|cuda" in err
