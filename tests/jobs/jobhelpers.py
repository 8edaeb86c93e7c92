"""Helpers for the jobs tests: tiny synthetic specs and `python -m jobs` as a real process."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Small enough for a 2-core CI box, big enough that every model learns something. The easy
# synthetic data (no blend of another class, shifts of 2): the default one, made so that no
# model gets it all right (jobs/data.py: make_synthetic), needs more steps than these tests
# can pay for, while every model learns this one in a few dozen.
TINY = {
    "model": "tutorial_cnn",
    "dataset": "synthetic",
    "synthetic": {"train_size": 400, "test_size": 200, "mix": 0.0, "shift": 2},
    "val_size": 0.1,
    "epochs": 2,
    "batch_size": 32,
    "device": "cpu",
    "optimizer": {"name": "adam", "lr": 0.003},
}


def tiny_spec(**overrides) -> dict:
    """Returns TINY with `overrides` merged in (one level deep for mappings)."""
    spec = copy.deepcopy(TINY)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    return spec


def job_env(**extra: str) -> dict:
    """Returns the environment for a job process: one thread each, so parallel jobs fit 2 cores."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCH_")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    env.update(extra)
    return env


def start_job(spec: dict, out: Path, **env: str) -> subprocess.Popen:
    """Starts `python -m jobs SPEC.json --out out` with SPEC.json written beside out."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spec_path = out.parent / f"{out.name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    return subprocess.Popen([sys.executable, "-m", "jobs", str(spec_path), "--out", str(out)],
                            cwd=REPO, env=job_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout_s: float = 120) -> tuple[int, str, str]:
    """Returns (exit code, stdout, stderr) once `proc` ends."""
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


def run_job(spec: dict, out: Path, **env: str) -> tuple[int, str, str]:
    """Runs one job to the end; returns (exit code, stdout, stderr)."""
    return finish(start_job(spec, out, **env))


def result(out: Path) -> dict:
    """Returns out/result.json."""
    return json.loads((out / "result.json").read_text())


def metrics(out: Path, drop_timing: bool = True) -> list[dict]:
    """Returns out/metrics.jsonl, without the wall-clock keys unless asked."""
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    if drop_timing:
        for line in lines:
            for key in ("images_per_s", "elapsed_s", "time"):
                line.pop(key)
    return lines

