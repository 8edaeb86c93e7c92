"""Wall time of `launch status` against its floor, `python -c 'import pynvml, psutil'`.

Both run as fresh processes, interleaved, in this one invocation; the figure is the median
of the per-pair ratios (goal: under 1.3). By default status reads the 8-GPU fixture through
LAUNCH_NVML_SNAPSHOT; with --real it asks the machine's driver and also times nvidia-smi.
With --leases N a helper process holds N GPU leases meanwhile, so status reads /proc/locks
and the slot files as on a machine where jobs run (an empty lease directory skips both).

    python bench/status_latency.py [--rounds 21] [--real] [--leases 4]
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

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "nvml" / "eight.json"


def wall_s(argv: list[str], env: dict[str, str]) -> float:
    """Return the wall time of one run of argv; fails loudly if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


HOLD = """
import sys, time
from launcher.machine import leases
from launcher.machine import nvml
uuids = [gpu.uuid for gpu in nvml.query().gpus][:int(sys.argv[1])]
held = leases.acquire_gpus(uuids, len(uuids), 1, {"user": "bench", "sweep": "bench-1"})
print(len(held or ()), flush=True)
time.sleep(3600)
"""


def hold_leases(count: int, env: dict[str, str]) -> subprocess.Popen:
    """Start a process that holds `count` GPU leases of the fixture until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(count)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    got = proc.stdout.readline().strip()
    if got != str(count):
        proc.kill()
        sys.exit(f"could not take {count} GPU leases (took {got or 'none'})")
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--real", action="store_true", help="query the real driver")
    parser.add_argument("--leases", type=int, default=0, metavar="N",
                        help="hold N GPU leases of the fixture while timing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LAUNCH_RUNS_DIR": f"{tmp}/runs", "LAUNCH_LOCK_DIR": f"{tmp}/locks",
               "XDG_STATE_HOME": f"{tmp}/state"}  # an index of sweeps of its own
        # As on a user's machine, modules load from cached bytecode, not from a fresh compile.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if not args.real:
            env["LAUNCH_NVML_SNAPSHOT"] = str(FIXTURE)
        holder = hold_leases(args.leases, env) if args.leases else None
        runs = {
            "status": [sys.executable, "-m", "launcher.cli", "status"],
            "floor": [sys.executable, "-c", "import pynvml, psutil"],
        }
        if args.real and shutil.which("nvidia-smi"):
            runs["nvidia-smi"] = ["nvidia-smi"]
        times: dict[str, list[float]] = {name: [] for name in runs}
        try:
            for argv in runs.values():  # warm the page cache and write the .pyc files
                wall_s(argv, env)
            for _ in range(args.rounds):
                for name, argv in runs.items():
                    times[name].append(wall_s(argv, env))
        finally:
            if holder:
                holder.kill()
                holder.wait()
    for name, values in times.items():
        print(f"{name:>10}: median {1000 * statistics.median(values):6.1f} ms "
              f"over {len(values)} runs")
    ratios = [s / f for s, f in zip(times["status"], times["floor"], strict=True)]
    print(f"status / floor: median ratio {statistics.median(ratios):.2f} (goal < 1.3)")
    if "nvidia-smi" in times:
        smi = [s / n for s, n in zip(times["status"], times["nvidia-smi"], strict=True)]
        print(f"status / nvidia-smi: median ratio {statistics.median(smi):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
