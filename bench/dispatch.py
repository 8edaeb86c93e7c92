"""How fast the local executor turns jobs over, against `xargs -P N` running the same commands.

200 command jobs that each sleep 0.1 s, on the 4-GPU snapshot with one job per GPU and one CPU
each, N = min(4, the machine's CPUs) at a time (a sweep's CPU budget cannot exceed the
machine's CPUs): the supervisor must start the next job the moment one ends, as xargs does.
Prints the ratio of wall times (goal: under 1.15). Run: .venv/bin/python bench/dispatch.py
[--jobs 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "tests" / "fixtures" / "nvml" / "idle4.json"
sys.path.insert(0, str(ROOT))
from launcher.machine.cpus import machine_cpus  # noqa: E402

PARALLEL = min(4, machine_cpus())


def time_xargs(jobs: int, seconds: float) -> float:
    """Return the wall time of xargs -P PARALLEL running `sleep` jobs times."""
    lines = "".join(f"{seconds}\n" for _ in range(jobs))
    t0 = time.perf_counter()
    subprocess.run(["xargs", "-P", str(PARALLEL), "-n", "1", "sleep"], input=lines, text=True,
                   check=True)
    return time.perf_counter() - t0


def time_launch(jobs: int, seconds: float, work: Path) -> float:
    """Return the wall time from `launch sweep --detach` to the supervisor's exit."""
    sweep = {
        "name": "dispatch",
        "job": {"command": ["sleep", "{seconds}"], "seconds": seconds, "i": 0},
        "grid": {"i": list(range(jobs))},
        "resources": {"gpus_per_job": 1, "jobs_per_gpu": 1, "cpu_budget": PARALLEL,
                      "cpus_per_job": 1},
    }
    path = work / "dispatch.yaml"
    path.write_text(yaml.safe_dump(sweep))
    env = {**os.environ, "LAUNCH_RUNS_DIR": str(work / "runs"),
           "LAUNCH_LOCK_DIR": str(work / "leases"), "LAUNCH_NVML_SNAPSHOT": str(SNAPSHOT)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "launcher.cli", "sweep", str(path), "--detach"],
                         env=env, capture_output=True, text=True, check=True)
    sweep_id = out.stdout.split()[0]
    info = work / "runs" / sweep_id / "supervisor.json"
    pid = int(yaml.safe_load(info.read_text())["pid"])
    while os.path.exists(f"/proc/{pid}") and "Z" not in _state(pid):
        time.sleep(0.005)
    return time.perf_counter() - t0


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ratios = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            base = time_xargs(args.jobs, args.seconds)
            ours = time_launch(args.jobs, args.seconds, Path(tmp))
        ratios.append(ours / base)
        print(f"xargs -P {PARALLEL}: {base:.2f} s   launch: {ours:.2f} s   ratio {ours / base:.3f}")
    print(f"dispatch: median ratio launch/xargs over {args.repeat} runs = "
          f"{statistics.median(ratios):.3f} (goal < 1.15)")


if __name__ == "__main__":
    main()
