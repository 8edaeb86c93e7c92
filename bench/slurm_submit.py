"""How fast a 1,000-job sweep reaches Slurm, against 1,000 plain `sbatch --wrap` calls.

Both sides submit held jobs (nothing runs) to the test cluster (slurm/start-cluster.sh) and
cancel them afterwards. The sweep side is what `launch sweep FILE --executor slurm` does after
Python starts: plan the sweep, write the run directory, submit one submitit array. Prints the
ratio of wall times (goal: under 0.05: one array, not a thousand submissions).
Run: .venv/bin/python bench/slurm_submit.py [--jobs 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.commands import sweep as sweeping  # noqa: E402
from launcher.slurm import submit as slurm  # noqa: E402
from launcher.slurm.query import run_query  # noqa: E402


def time_sbatch_loop(jobs: int, work: Path) -> tuple[float, list[str]]:
    """Return (wall time, job ids) of `jobs` held `sbatch --wrap` submissions, one by one."""
    ids = []
    t0 = time.perf_counter()
    for _ in range(jobs):
        done = subprocess.run(["sbatch", "--parsable", "--hold", "--job-name=bench-loop",
                               f"--output={work}/loop-%j.out", "--wrap", "true"],
                              capture_output=True, text=True, check=True, timeout=60)
        ids.append(done.stdout.strip().split(";")[0])
    return time.perf_counter() - t0, ids


def time_sweep(jobs: int, work: Path, name: str) -> tuple[float, float, list[str]]:
    """Return (wall time of plan + run dir + submit, of the submit alone, array ids)."""
    sweep = {
        "name": name,
        "job": {"model": "tutorial_cnn", "dataset": "synthetic", "epochs": 1},
        "grid": {"seed": list(range(jobs))},
        "resources": {"gpus_per_job": 1, "cpus_per_job": 1},
        "slurm": {"time_min": 10, "cpus_per_task": 1},
    }
    file = work / f"{name}.yaml"
    file.write_text(yaml.safe_dump(sweep))
    t0 = time.perf_counter()
    sw, plans = sweeping.load_plan(str(file), [])
    path = sweeping.create_run_dir(sw, plans, "slurm")
    t1 = time.perf_counter()
    ids = slurm.submit_sweep(sw, plans, path, hold=True)
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1, ids


def cancel(ids: list[str]) -> None:
    """scancel the given jobs, a few hundred per call."""
    for i in range(0, len(ids), 300):
        subprocess.run(["scancel", *ids[i:i + 300]], check=False, timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--dir", default=".", help="where the run directory goes, as ./runs "
                        "would (default: here; /tmp is node-local and, on some machines, slow)")
    args = parser.parse_args()
    if run_query(["sinfo", "-h"]) is None:
        print("no Slurm answers: start the test cluster with slurm/start-cluster.sh")
        return 2
    work = Path(tempfile.mkdtemp(prefix=".bench-slurm-", dir=args.dir)).absolute()
    os.environ["LAUNCH_RUNS_DIR"] = str(work / "runs")
    loop_s = 0.0
    loop_ids: list[str] = []
    array_ids: list[str] = []
    sweeps = []
    try:
        # the sweep side is short and file-system bound: take the median of three, one
        # before the loop and two after, against the one long loop
        for k, when in enumerate(("before", "after", "after")):
            if when == "after" and not loop_ids:
                loop_s, loop_ids = time_sbatch_loop(args.jobs, work)
            sweep_s, submit_s, ids = time_sweep(args.jobs, work, f"bench-slurm-{k}")
            sweeps.append((sweep_s, submit_s))
            array_ids += ids
    finally:
        cancel(array_ids + loop_ids)
        shutil.rmtree(work, ignore_errors=True)
    sweep_s = statistics.median(s for s, _ in sweeps)
    submit_s = statistics.median(s for _, s in sweeps)
    print(f"{args.jobs} held jobs on {os.uname().nodename}, Slurm test cluster")
    print(f"  sbatch --wrap loop:                      {loop_s:6.2f} s")
    print(f"  launch sweep (plan + run dir + submit):  {sweep_s:6.2f} s, median of "
          + ", ".join(f"{s:.2f}" for s, _ in sweeps) + f" (one array each: {len(array_ids)})")
    print(f"    of which the submitit array:           {submit_s:6.2f} s")
    print(f"ratio sweep / loop: {sweep_s / loop_s:.4f} (goal < 0.05); "
          f"submit alone / loop: {submit_s / loop_s:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
