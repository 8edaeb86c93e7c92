"""House rules between two real users: a per-user cap two users' sweeps race for, and turns.

The rules file belongs to root (the admin), readable by all, named by $LAUNCH_RULES.
"""

from __future__ import annotations

import os

import pytest
import yaml
from tenants import wait_for

from launcher.machine import house
from launcher.machine.cpus import machine_cpus

pytestmark = pytest.mark.skipif(machine_cpus() < 2, reason="two users' jobs side by side "
                                "need two CPU tokens: this machine has one CPU")
TWO_CPUS = {"cpu_budget": 2, "cpus_per_job": 1, "gpus_per_job": 1}


def install_rules(box, rules: dict) -> dict[str, str]:
    """Write the admin's rules file (root's, 0644); return the environment that names it."""
    path = box / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    path.chmod(0o644)
    return {house.RULES_ENV: str(path)}


def held_at_once(runs: list[dict]) -> int:
    """Return the most runs that were alive at one moment."""
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    most = alive = 0
    for _, step in edges:
        alive += step
        most = max(most, alive)
    return most


def test_a_per_user_cap_holds_over_all_of_a_users_sweeps_started_at_once(shared_box, box):
    alice, bob = shared_box
    env = install_rules(box, {"max_gpus_per_user": 1})
    files = [(alice, alice.sweep_file("first", {"seed": [0, 1, 2]}, TWO_CPUS, seconds=0.1)),
             (alice, alice.sweep_file("second", {"seed": [0, 1, 2]}, TWO_CPUS, seconds=0.1)),
             (bob, bob.sweep_file("his", {"seed": [0, 1, 2]}, TWO_CPUS, seconds=0.1))]
    for round_ in range(20):
        starts = [tenant.popen([tenant.world.python, "-m", "launcher.cli", "sweep", str(path),
                                "--detach"], **env) for tenant, path in files]
        assert [p.wait() for p in starts] == [0, 0, 0], f"round {round_}"
        runs = {alice.short: [], bob.short: []}
        for tenant in (alice, bob):
            for sweep in os.listdir(tenant.runs):
                view = tenant.wait_ended(sweep)
                assert {j.state for j in view.jobs} == {"finished"}, (round_, sweep)
                runs[tenant.short] += tenant.runs_of(sweep)
            for sweep in os.listdir(tenant.runs):  # the next round counts its own runs
                os.rename(tenant.runs / sweep, tenant.home / f"round{round_}-{sweep}")
        assert len(runs["alice"]) == 6 and len(runs["bob"]) == 3
        assert held_at_once(runs["alice"]) == 1, f"round {round_}: Alice held two GPUs"
    # The cap is Alice's: with the same rules Bob's sweep ran beside hers.
    status = alice.launch("status", **env)
    assert "house rules: 1 GPU per user" in status.stdout, status.stdout


def test_two_users_on_one_gpu_take_turns_job_by_job(shared_box):
    alice, bob = shared_box
    one_card = {**TWO_CPUS, "include_gpus": [0]}
    # Every job waits at its own gate (fake_job.py), which the test opens only once the other
    # user's sweep waits with its notice posted: the turns, not the machine's speed, decide.
    gates = {}
    for tenant in (alice, bob):
        gates[tenant.short] = tenant.home / "gates"
        gates[tenant.short].mkdir(mode=0o755)
    files = [(t, t.sweep_file("turns", {"seed": [0, 1, 2, 3]}, one_card, seconds=0,
                              gate=str(gates[t.short]))) for t in (alice, bob)]
    starts = [t.popen([t.world.python, "-m", "launcher.cli", "sweep", str(path), "--detach"])
              for t, path in files]
    assert [p.wait() for p in starts] == [0, 0]
    sweeps = {t.short: (t, *os.listdir(t.runs)) for t in (alice, bob)}

    def turn() -> tuple[str, str] | None:
        """Return (user, job) of the one running job once the other user, if any of their
        jobs is left, waits with its notice posted."""
        views = {user: t.view(sweep) for user, (t, sweep) in sweeps.items()}
        running = [(user, j.job_id) for user, v in views.items() for j in v.jobs
                   if j.state == "running" and not (gates[user] / j.job_id).exists()]
        if len(running) != 1:
            return None
        other = next(user for user in sweeps if user != running[0][0])
        left = any(j.state in ("pending", "waiting") for j in views[other].jobs)
        noticed = any(alice.lock_dir.glob(f"meta/*/wait.{sweeps[other][1]}"))
        return running[0] if noticed or not left else None

    order = []
    for _ in range(8):
        user, job_id = wait_for("one job running and the other user's notice", turn)
        order.append(user)
        (gates[user] / job_id).touch()
    for tenant, sweep in sweeps.values():
        assert {j.state for j in tenant.wait_ended(sweep).jobs} == {"finished"}
    # The GPU went from one user to the other at every job's end.
    assert all(a != b for a, b in zip(order, order[1:], strict=False)), " ".join(order)


def test_a_gpu_left_by_a_finished_sweep_goes_to_the_user_who_holds_fewer(shared_box):
    # A sweep whose last job ends places nothing more, so it gives nothing way: the GPU it
    # leaves goes to the waiting sweep first in line, whoever looks first.
    alice, bob = shared_box
    two_cards = {**TWO_CPUS, "include_gpus": [0, 1]}

    def start(tenant, name: str, seeds: list[int]) -> tuple[str, object]:
        gates = tenant.home / f"gates-{name}"  # a gate per job (fake_job.py)
        gates.mkdir(mode=0o755)
        os.chown(gates, tenant.uid, tenant.gid)
        path = tenant.sweep_file(name, {"seed": seeds}, two_cards, seconds=0, gate=str(gates))
        return tenant.start(path), gates

    def running(tenant, sweep: str) -> list[str]:
        return [j.job_id for j in tenant.view(sweep).jobs if j.state == "running"]

    def noticed(sweep: str) -> bool:
        return any(alice.lock_dir.glob(f"meta/*/wait.{sweep}"))

    last, last_gates = start(bob, "last", [0])  # Bob's sweep of one job: it ends, and is done
    (last_job,) = wait_for("Bob's one job running", lambda: running(bob, last))
    hers, her_gates = start(alice, "hers", [0, 1, 2])
    wait_for("Alice's first job running and her next waiting",
             lambda: running(alice, hers) and noticed(hers))
    his, his_gates = start(bob, "his", [0, 1])
    wait_for("Bob's second sweep waiting", lambda: noticed(his))
    # Alice holds one GPU, Bob, once his one job ends, none: the GPU it leaves is Bob's turn.
    (last_gates / last_job).touch()

    def taken() -> str | None:
        if running(bob, his):
            return "bob"
        return "alice" if len(running(alice, hers)) == 2 else None

    assert wait_for("the GPU of Bob's ended job taken again", taken) == "bob"
    for tenant, sweep, gates in ((alice, hers, her_gates), (bob, his, his_gates)):
        for job in tenant.view(sweep).jobs:
            (gates / job.job_id).touch()
    for tenant, sweep in ((alice, hers), (bob, his), (bob, last)):
        assert {j.state for j in tenant.wait_ended(sweep).jobs} == {"finished"}
