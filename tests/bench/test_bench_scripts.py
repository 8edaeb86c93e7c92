"""The benchmark scripts that wait for hardware or data: they run where those are missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def env(**extra: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LAUNCH_", "GPU_CHECK"))}
    return {**base, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU may be here: the "
                    "whole check would run, for minutes")
def test_gpu_check_without_a_gpu_runs_the_rest_and_says_what_it_skipped(tmp_path):
    out = tmp_path / "gc"
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(out)],
                          env=env(PYTHON=sys.executable), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (out / "summary.txt").read_text()
    for name in ("snapshot", "status", "status-full", "status-json", "pytest-gpu"):
        assert f"\n{name}: ok (" in summary, summary
    for name in ("status-vs-smi", "repro-1", "repro-2", "loaders", "time-to-94"):
        assert f"\n{name}: no GPU: skipped" in summary, summary
    assert "; 0 failed;" in summary
    snap = json.loads((out / "snapshot.json").read_text())
    assert snap["format"] == "launch-nvml-snapshot/1" and snap["host"] == "host"  # anonymized
    assert json.loads((out / "status.json").read_text())["nvml_error"]
    assert not (out / "runs").exists(), "its own runs and leases are cleaned away"


def test_cifar_accuracy_without_the_data_says_skipped_and_exits_0(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "cifar_accuracy.py")],
                          env=env(LAUNCH_DATA=str(tmp_path)), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("skipped: CIFAR-10 is not under " + str(tmp_path))


def test_cifar_accuracy_runs_every_point_of_cifar_yaml_with_its_variant_keys():
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location("cifar_accuracy",
                                                  REPO / "bench" / "cifar_accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    points = yaml.safe_load((REPO / "configs" / "cifar.yaml").read_text())["points"]

    def chosen(**given):
        args = {"points": "", "models": ",".join(bench.FAMILIES), **given}
        return bench.chosen_points(type("Args", (), args))

    assert chosen(points="all") == points
    assert chosen(points="5,11") == [points[5], points[11]]
    assert chosen() == [{"model": m} for m in bench.FAMILIES]  # the plain points of (b)
    assert bench.point_name(points[11]) == 'resnet9 stochastic_depth={"p_L":0.5}'
    assert bench.point_name({"model": "alexnet"}) == "alexnet"
