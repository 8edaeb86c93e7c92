"""Time to load, expand and validate a 10,000-job sweep and write its run directory.

Baseline: the same work for 1,000 jobs in the same invocation; linear growth means a ratio
near 10. Goal: under 2 s for 10,000 jobs. Every job is a built-in model job, so each one
goes through jobs.spec.validate_spec, as in `launch sweep`.

    .venv/bin/python bench/sweep_plan.py [--repeat 3] [--dir DIR]

Writing 10,000 job folders is file-system bound: give --dir on the disk the runs will live on
(the default is the system temp dir).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher.commands.sweep import create_run_dir  # noqa: E402
from launcher.config.plan import plan_jobs  # noqa: E402
from launcher.config.sweepfile import load_sweep  # noqa: E402

SWEEP = """\
name: bench-{jobs}
job: {{model: resnet9, dataset: synthetic, epochs: 2}}
grid:
  model: [tutorial_cnn, alexnet, inception, ensemble, resnet9]
  optimizer.lr: [0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001]
seeds: {seeds}
"""


def one_run(jobs: int, work: Path) -> tuple[float, float]:
    """Return (seconds to load and plan, seconds to write the run directory) for one sweep."""
    path = work / f"sweep-{jobs}.yaml"
    path.write_text(SWEEP.format(jobs=jobs, seeds=jobs // 50))
    start = time.perf_counter()
    sweep = load_sweep(path)
    plans = plan_jobs(sweep)
    planned = time.perf_counter()
    assert len(plans) == jobs, len(plans)
    paths = create_run_dir(sweep, plans, "local")  # into $LAUNCH_RUNS_DIR, set by main()
    written = time.perf_counter()
    shutil.rmtree(paths.root)
    return planned - start, written - planned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (median kept)")
    parser.add_argument("--dir", default=None, help="where to write the run directories")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweep-plan-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        os.environ["LAUNCH_RUNS_DIR"] = str(work / "runs")
        results = {}
        for jobs in (1_000, 10_000):
            runs = [one_run(jobs, work) for _ in range(args.repeat)]
            plan_s = statistics.median(r[0] for r in runs)
            write_s = statistics.median(r[1] for r in runs)
            results[jobs] = (plan_s, write_s)
            print(f"{jobs:>6} jobs: load+expand+validate {plan_s:.3f} s, write run dir "
                  f"{write_s:.3f} s, total {plan_s + write_s:.3f} s (median of {args.repeat})")
    small, big = (sum(results[n]) for n in (1_000, 10_000))
    print(f"run directories under {args.dir or tempfile.gettempdir()}")
    print(f"ratio 10,000 / 1,000 jobs: {big / small:.2f} (linear growth: 10); "
          f"10,000 jobs in {big:.2f} s (goal < 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
