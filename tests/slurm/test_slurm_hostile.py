"""Hostile swept strings reach Slurm jobs as data, never code (a hostile sweep name is
refused when the sweep is planned, so it never gets this far).

Both ways to Slurm: submitit (`launch sweep --executor slurm`) and the standalone script
(`launch sbatch` then `sbatch`). Each job writes the value it received to tag.txt; nothing of
the values may appear in what sbatch reads, and none of the embedded commands may run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from slurmhelpers import cli, states, sweep_path, wait_ended, write_sweep

pytestmark = pytest.mark.slurm

WRITE_TAG = ("import os, sys; "
             "open(os.environ['LAUNCH_JOB_DIR'] + '/tag.txt', 'w').write(sys.argv[1])")


def hostile_sweep(tmp_path) -> tuple[str, list[str]]:
    """Return (sweep file text, the swept values); every value tries to run `touch`."""
    pwned = tmp_path / "pwned"
    values = [
        f"a b 'c' \"d\" $(touch {pwned}-dollar)",
        f"; touch {pwned}-semicolon ;\nsecond line",
        f"`touch {pwned}-backtick` && touch {pwned}-and",
        f"x\" ; touch {pwned}-quote ; echo \"",
    ]
    sweep = {
        "name": "evil",  # a hostile name is refused (tests/launcher/test_sweep_checks.py)
        "job": {"command": [sys.executable, "-c", WRITE_TAG, "{tag}"], "tag": "plain"},
        "grid": {"tag": values},
        "resources": {"gpus_per_job": 0, "cpus_per_job": 1},
        "slurm": {"time_min": 5, "cpus_per_task": 1},
    }
    return json.dumps(sweep, indent=1), values  # JSON is YAML


def check_ran_as_data(path, values, tmp_path, scripts) -> None:
    ended = wait_ended(path, 90)
    assert {s["state"] for s in ended.values()} == {"finished"}, ended
    info = json.loads((path / "sweep.json").read_text())
    got = {(path / "jobs" / j["id"] / "tag.txt").read_text() for j in info["jobs"]}
    assert got == set(values)
    assert not list(tmp_path.glob("pwned*")), "a hostile value was executed"
    # the sweep id, made of [A-Za-z0-9._-], is the only trace of the sweep in a script
    assert re.fullmatch(r"[A-Za-z0-9._-]+", path.name)
    assert scripts
    for text in (t.replace(path.name, "SWEEP") for t in scripts):
        for needle in ("touch", "pwned", "rm -rf", "second line", "next line", "`", "'q'"):
            assert needle not in text, (needle, text)


def test_hostile_values_through_submitit(cluster, capsys, tmp_path):
    text, values = hostile_sweep(tmp_path)
    code, out, err = cli(capsys, "sweep", write_sweep(tmp_path, "evil", text),
                         "--executor", "slurm")
    assert code == 0, err
    path = sweep_path(cluster, out)
    scripts = [p.read_text() for p in (path / "slurm").glob("*.sh")]
    check_ran_as_data(path, values, tmp_path, scripts)


def test_hostile_values_through_standalone_script(cluster, capsys, tmp_path):
    text, values = hostile_sweep(tmp_path)
    script = tmp_path / "evil.sbatch"
    code, out, err = cli(capsys, "sbatch", write_sweep(tmp_path, "evil", text),
                         "-o", str(script))
    assert code == 0, err
    (path,) = [p for p in cluster.iterdir() if p.is_dir()]
    assert all(s == {} for s in states(path).values())  # written, not submitted
    done = subprocess.run(["sbatch", str(script)], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    check_ran_as_data(path, values, tmp_path, [script.read_text()])
