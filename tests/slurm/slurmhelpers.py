"""Helpers of the Slurm tests: sweep files, waiting on state files, local reference runs."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import waiting

from launcher.cli import main
from launcher.rundir.layout import SweepPaths
from launcher.rundir.sweepdir import read_specs

ENDED = ("finished", "failed", "cancelled", "timeout")
# One interpreter runs every reference job: torch is imported once, not once per job.
LOCAL_RUNNER = """
import json, sys
from jobs.__main__ import main
out = {}
for spec, job_dir in zip(sys.argv[1::2], sys.argv[2::2]):
    assert main([spec, "--out", job_dir]) == 0, job_dir
    out[job_dir] = json.load(open(job_dir + "/result.json"))["weights_sha256"]
print(json.dumps(out))
"""


def tiny_job(epochs: int = 2, train_size: int = 300, batch_size: int = 50) -> str:
    """Return the `job:` block of a sweep file for a seconds-long synthetic CPU job."""
    return (f"job:\n  model: tutorial_cnn\n  dataset: synthetic\n"
            f"  synthetic: {{train_size: {train_size}, test_size: 100}}\n"
            f"  epochs: {epochs}\n  batch_size: {batch_size}\n  val_size: 0.1\n")


def write_sweep(folder: Path, name: str, text: str) -> str:
    """Write a sweep file; return its path."""
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Return (exit code, stdout, stderr) of `launch ARGV`."""
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def results_states(capsys, sweep_id: str) -> dict[str, str]:
    """Return job id -> state as `launch results SWEEP --csv` reports it."""
    code, out, err = cli(capsys, "results", sweep_id, "--csv")
    assert code == 0, err
    return {row["job_id"]: row["state"] for row in csv.DictReader(io.StringIO(out))}


def states(sweep_dir: Path) -> dict[str, dict]:
    """Return job id -> state.json of every job of a sweep ({} for a job with none yet)."""
    info = json.loads((sweep_dir / "sweep.json").read_text())
    out = {}
    for job in info["jobs"]:
        path = sweep_dir / "jobs" / job["id"] / "state.json"
        out[job["id"]] = json.loads(path.read_text()) if path.exists() else {}
    return out


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.2):
    """Return predicate()'s first true value (tests/waiting.py), polling Slurm less often."""
    return waiting.wait_for(what, predicate, timeout_s, poll_s)


def wait_ended(sweep_dir: Path, timeout_s: float = 150) -> dict[str, dict]:
    """Return the states once every job of the sweep has ended."""
    def ended():
        st = states(sweep_dir)
        return st if all(s.get("state") in ENDED for s in st.values()) else None
    try:
        return wait_for(ended, timeout_s, f"the jobs of {sweep_dir.name} to end")
    except pytest.fail.Exception:
        folder = sweep_dir / "slurm"
        logs = sorted(folder.glob("*.err")) + sorted(folder.glob("*.out"))
        tails = "\n".join(f"{p.name}: {p.read_text()[-600:]}" for p in logs[-4:])
        squeue = subprocess.run(["squeue", "-o", "%i %T %r"], capture_output=True, text=True,
                                timeout=10).stdout
        raise AssertionError(f"jobs did not end: {states(sweep_dir)}\n{squeue}\n{tails}") from None


def start_local_runs(job_dirs: list[Path], out_root: Path, threads: int,
                     workers: int) -> subprocess.Popen:
    """Start reference runs of the jobs' specs with the same thread settings, outside Slurm."""
    args = []
    out_root.mkdir(parents=True, exist_ok=True)
    for d in job_dirs:
        # The node writes its spec.json when the task starts; the plan has it from the start.
        spec_path = out_root / f"{d.name}.spec.json"
        spec_path.write_text(json.dumps(read_specs(SweepPaths(d.parent.parent))[d.name]))
        args += [str(spec_path), str(out_root / d.name)]
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "LAUNCH_NUM_WORKERS": str(workers),
           "CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    return subprocess.Popen([sys.executable, "-c", LOCAL_RUNNER, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def local_hashes(proc: subprocess.Popen, timeout_s: float = 150) -> dict[str, str]:
    """Return job id -> weights_sha256 of the reference runs started by start_local_runs."""
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, err[-2000:]
    return {Path(out_dir).name: h for out_dir, h in json.loads(out.splitlines()[-1]).items()}


def result_hash(job_dir: Path) -> str:
    """Return the weights_sha256 of a finished job."""
    return json.loads((job_dir / "result.json").read_text())["weights_sha256"]


def sweep_path(runs: Path, stdout: str) -> Path:
    """Return the run directory named by the first line `launch sweep` printed."""
    return runs / stdout.split()[0]


def scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, timeout=30, capture_output=True)


def slurm_word(slurm_id: str) -> str:
    """Return squeue's "STATE REASON" of one task."""
    return subprocess.run(["squeue", "-h", "-j", slurm_id, "-o", "%T %r"], capture_output=True,
                          text=True, timeout=30).stdout.strip()


_REQUEUED_AT: dict[str, float] = {}  # when each requeued task was first seen held back


def started_again(slurm_id: str) -> bool:
    """Return whether a requeued task left the queue; until then make it eligible at once.

    Slurm holds a requeued job back for about two minutes (BeginTime, set once the old run
    has finished completing); the test moves that start time to now, again if Slurm reset
    it, but only two seconds after the hold was first seen: slurmd refuses a job whose
    credential was made in the same second as it revoked the old run's ("Job credential
    revoked"), and the task fails unstarted. A start time in the future would wait for
    Slurm's next scheduling pass (a minute); now is scheduled at once.
    """
    word = slurm_word(slurm_id)
    if word == "PENDING BeginTime":
        held_since = _REQUEUED_AT.setdefault(slurm_id, time.time())
        if time.time() - held_since >= 2:
            scontrol("update", f"JobId={slurm_id}", "StartTime=now")
    return not word.startswith("PENDING")
