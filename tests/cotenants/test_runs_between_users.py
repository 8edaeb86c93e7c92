"""Two real users on one box: a runs folder they share, and the processes jobs leave behind.

A colleague's sweep in a shared project folder never breaks your `launch status`, a name
resolves to your own sweep first, and a job's leftovers are stopped before its GPU goes to
the next job, as a user without root (who can signal only their own processes) would see it.
"""

from __future__ import annotations

import json
import time

import yaml
from tenants import tenants, wait_for

from launcher import contract
from launcher.config.plan import make_sweep_id
from launcher.machine.cpus import machine_cpus

ONE_CPU = {"cpu_budget": min(2, machine_cpus()), "cpus_per_job": 1, "gpus_per_job": 0}


def test_a_shared_runs_folder_shows_everyones_sweeps_and_resolves_to_your_own(world, box):
    project = box / "project"  # a shared project folder, as a lab sets one up
    project.mkdir()
    project.chmod(0o1777)
    alice, bob = tenants(world, box, box / "tmp" / "leases", runs=project)
    (box / "tmp").mkdir()
    (box / "tmp").chmod(0o1777)
    # Bob's sweep first, then Alice's of the same name: hers is the newer.
    mine = bob.start(bob.sweep_file("cifar", {"seed": [0]}, ONE_CPU))
    bob.wait_ended(mine)
    hers = alice.start(alice.sweep_file("cifar", {"seed": [0, 1]}, ONE_CPU))
    alice.wait_ended(hers)
    assert hers != mine
    for state in project.glob(f"{hers}/jobs/*/state.json"):
        assert state.stat().st_mode & 0o044 == 0o044  # readable by the group and others

    # Status shows Bob his own sweeps, reading past Alice's; hers when he names it.
    shown = bob.launch("status")
    assert shown.returncode == 0, shown.stderr
    assert mine in shown.stdout and hers not in shown.stdout
    theirs = bob.launch("status", hers)
    assert theirs.returncode == 0, theirs.stderr
    assert hers in theirs.stdout and "2 finished" in theirs.stdout
    picked = bob.launch("status", "cifar")
    assert picked.returncode == 0, picked.stderr
    assert mine in picked.stdout and hers not in picked.stdout  # his own, though hers is newer
    assert hers in alice.launch("status", "cifar").stdout

    # Alice closes her sweep's folder: nothing of Bob's breaks, and naming it says why.
    (project / hers).chmod(0o700)
    for args in (["status"], ["status", "--json"], ["status", "--full"], ["status", "cifar"]):
        shown = bob.launch(*args)
        assert shown.returncode == 0, f"{args}: {shown.stderr}"
        assert mine in shown.stdout
    shown = bob.launch("status", hers)
    assert shown.returncode == 0, shown.stderr
    line = [text for text in shown.stdout.splitlines() if hers in text]
    assert len(line) == 1 and "ermission denied" in line[0], shown.stdout

def test_a_job_ends_whole_for_a_user_without_root_and_a_cotenants_impostor_is_ignored(
        shared_box):
    alice, bob = shared_box
    gate = alice.home / "gate"
    path = alice.home / "leave.yaml"
    path.write_text(yaml.safe_dump({
        "name": "leave",
        "job": {"command": [alice.world.python, str(alice.world.jobs / "leaver_job.py"),
                            str(gate)], "n": 0},
        "grid": {"n": [0, 1]},
        "resources": {**ONE_CPU, "gpus_per_job": 1, "include_gpus": [0]}}))
    sweep = alice.start(path)
    paths = alice.paths(sweep)
    first = wait_for("a job to run", lambda: [
        j for j in alice.view(sweep).jobs if j.state in ("running", "stopping")])[0]
    # Bob starts a process that carries Alice's job's identity: her supervisor can neither
    # stop it nor should it wait for it.
    impostor = bob.popen(["/bin/sleep", "600"], **{
        contract.ENV_SWEEP_ID: sweep, contract.ENV_JOB_ID: first.job_id,
        contract.ENV_JOB_DIR: str(paths.job(first.job_id).dir)})
    try:
        stopping = wait_for("a job to be stopping", lambda: [
            j for j in alice.view(sweep).jobs if j.state == "stopping"])
        assert "stopping 1 process it left" in stopping[0].reason, stopping[0].reason
        # Nothing took the GPU while the child lingered.
        assert not any(j.state == "running" for j in alice.view(sweep).jobs)
        gate.touch()
        view = alice.wait_ended(sweep)
        assert [j.state for j in view.jobs] == ["finished", "finished"]
        children = sorted((read_jsonl(paths.job(j.job_id).dir / "child.jsonl")
                           for j in view.jobs), key=lambda c: c[0]["time"])
        assert [e["event"] for e in children[0]] == ["start", "sigterm", "end"]
        assert children[1][0]["time"] > children[0][-1]["time"]  # after the first one ended
        assert impostor.poll() is None  # Bob's process is Bob's business
    finally:
        impostor.kill()
        impostor.wait()


def test_a_cotenants_sweep_of_the_same_name_in_the_same_second_gets_its_own_id(shared_box):
    alice, bob = shared_box
    # Bob's sweeps named "twin" took every second of the next five minutes on this machine
    # (as many sweeps started in the same seconds as Alice's would): hers must differ.
    first = bob.start(bob.sweep_file("first", {"seed": [0]}, ONE_CPU))
    bob.wait_ended(first)
    now = time.time()
    taken = [make_sweep_id("twin", now + s) for s in range(300)]
    claims = bob.sh(" && ".join(f": > {bob.lock_dir}/sweeps/{sweep}" for sweep in taken))
    assert claims.returncode == 0, claims.stderr
    hers = alice.start(alice.sweep_file("twin", {"seed": [0]}, ONE_CPU))
    assert hers not in taken
    if hers.rsplit("-", 1)[0] in taken:  # started within the five minutes, as it should
        assert hers.endswith("-2"), hers
    assert [j.state for j in alice.wait_ended(hers).jobs] == ["finished"]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]
