"""Wall time of `launch status --hosts` over four hosts against the slowest single host.

Four loopback sshd (tests/e2e/sshd.py), each a "host" with its own NVML snapshot, run
directory and lease directory. Each round runs, as fresh processes:
  - `launch status --hosts h1,h2,h3,h4` (every host asked at once, then the view), and
  - `ssh -F CONFIG hN launch status --json` for each host, one after the other;
  - the same four ssh commands started at once and waited for (the parallel floor);
and the figure is the median over rounds of (hosts view) / (slowest single host that round).
The goal (at most 1.3) says the hosts are asked in parallel: four cost about one. The hosts
share this machine's cores, so on a box with fewer cores than hosts their logins and remote
`launch status` runs contend, as four real machines' would not: the parallel floor shows
what that contention alone costs, and (hosts view) / (parallel floor) what launch adds to it.

    python bench/hosts_status.py [--rounds 11] [--hosts 4]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from sshd import start_host, write_ssh_config  # noqa: E402  (the e2e helper, by path)

SNAPSHOTS = ("idle4", "busy4", "mig", "eight")
LAUNCH = """#!/bin/sh
PYTHONPATH={root} exec {python} -m launcher.cli "$@"
"""


def wall_s(argv: list[str], env: dict[str, str]) -> float:
    """Return the wall time of one run of argv; exits loudly if it fails."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{argv} exited {done.returncode}: {done.stderr.decode()[-800:]}")
    return elapsed


def parallel_wall_s(argvs: list[list[str]], env: dict[str, str]) -> float:
    """Return the wall time of running every argv at once, until the last one ends."""
    start = time.perf_counter()
    procs = [subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL) for argv in argvs]
    codes = [proc.wait() for proc in procs]
    elapsed = time.perf_counter() - start
    if any(codes):
        sys.exit(f"parallel ssh exited {codes}")
    return elapsed


def start_hosts(root: Path, count: int) -> tuple[list, Path]:
    """Return `count` running hosts and the ssh config naming them h1, h2, ..."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "launch").write_text(LAUNCH.format(root=ROOT, python=sys.executable))
    (bin_dir / "launch").chmod(0o755)
    servers, ports = [], {}
    for i in range(1, count + 1):
        snapshot = SNAPSHOTS[(i - 1) % len(SNAPSHOTS)]
        folder = root / f"h{i}"
        (folder / "locks").mkdir(parents=True)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LAUNCH_RUNS_DIR": str(folder / "runs"),
               "LAUNCH_LOCK_DIR": str(folder / "locks"),
               "LAUNCH_NVML_SNAPSHOT": str(ROOT / "tests" / "fixtures" / "nvml" /
                                           f"{snapshot}.json")}
        server = start_host(folder / "sshd", env)
        servers.append(server)
        ports[f"h{i}"] = (server.port, server.key)
    return servers, write_ssh_config(root / "ssh_config", ports, servers[0].user)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--hosts", type=int, default=4, help="how many loopback hosts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        servers, ssh_config = start_hosts(root, args.hosts)
        names = [f"h{i}" for i in range(1, args.hosts + 1)]
        (root / "config.yaml").write_text(f"ssh_config: {ssh_config}\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LAUNCH_CONFIG": str(root / "config.yaml")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a user's machine: cached bytecode
        view = [sys.executable, "-m", "launcher.cli", "status", "--hosts", ",".join(names),
                "--timeout", "60"]
        single = {n: ["ssh", "-F", str(ssh_config), "-T", "-o", "BatchMode=yes", n,
                      "launch status --json"] for n in names}
        try:
            wall_s(view, env)  # warm the page cache and write the .pyc files
            for argv in single.values():
                wall_s(argv, env)
            views, slowest, floors, ratios, over_floor = [], [], [], [], []
            for _ in range(args.rounds):
                views.append(wall_s(view, env))
                slowest.append(max(wall_s(argv, env) for argv in single.values()))
                floors.append(parallel_wall_s(list(single.values()), env))
                ratios.append(views[-1] / slowest[-1])
                over_floor.append(views[-1] / floors[-1])
        finally:
            for server in servers:
                server.stop()
    print(f"cores: {os.cpu_count()}, hosts: {len(names)}, rounds: {args.rounds}")
    print(f"launch status --hosts ({len(names)} hosts): median "
          f"{1000 * statistics.median(views):6.1f} ms")
    print(f"slowest single ssh HOST launch status --json: median "
          f"{1000 * statistics.median(slowest):6.1f} ms")
    print(f"the {len(names)} ssh at once (parallel floor): median "
          f"{1000 * statistics.median(floors):6.1f} ms")
    print(f"hosts view / slowest single host: median ratio {statistics.median(ratios):.2f} "
          f"(goal <= 1.3)")
    print(f"hosts view / parallel floor: median ratio {statistics.median(over_floor):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
