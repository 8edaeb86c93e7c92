"""Two real users on one box: what one does to the lease directory never gives the other's GPU
to a second job, nor crashes the other's supervisor or anyone's `launch status`.

Findings of the co-tenants issue, each tried as the co-tenant would: deleting slot files
(refused after `sudo launch setup`; said by status before it), planting files where slots go,
writing garbage metadata and wait notices, an exclusive sweep beside a packed one, and the
race of two users' sweeps.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import textwrap

import pytest
from tenants import setup_leases, shared_overlaps, wait_for

from launcher.machine import fairshare, leasedir, leases
from launcher.machine.cpus import machine_cpus

pytestmark = pytest.mark.skipif(machine_cpus() < 2, reason="two users' jobs side by side "
                                "need two CPU tokens: this machine has one CPU")

UUIDS = ["GPU-f916a7f7-4aa4-4c58-44d3-7b8ae08cddfe", "GPU-59b41c04-8083-311f-7734-0c68da58e114",
         "GPU-706a3279-05d9-528a-9d43-e90f1850b8d8", "GPU-56a67f8c-c5b2-0e00-4086-4d180666f3a4"]
ESCAPES = "\x1b[2J\x1b[31m\x07\x1b]0;pwned\x07"
# The box's CPU tokens are shared: with two, the two users' sweeps run two jobs at a time.
ONE_GPU_ONE_CPU = {"cpu_budget": 2, "cpus_per_job": 1, "gpus_per_job": 1}

# A process of the co-tenant that holds flocks on files it made: argv[1:] are MODE:PATH=TEXT
# (MODE ex or sh, the flock; TEXT, what the file says). It prints "held" once all are held,
# then sleeps until killed.
HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fds = []
    for item in sys.argv[1:]:
        mode, _, pair = item.partition(":")
        path, _, said = pair.partition("=")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, said.encode())
        fcntl.flock(fd, fcntl.LOCK_SH if mode == "sh" else fcntl.LOCK_EX)
        fds.append(fd)
    print("held", flush=True)
    while True:
        time.sleep(60)
""")


def hold(tenant, files: dict[str, str], shared: tuple[str, ...] = ()):
    """Start a process of tenant's holding an flock on each file (path: content); LOCK_SH on
    those in shared, LOCK_EX on the others."""
    proc = subprocess.Popen([tenant.world.python, "-c", HOLDER,
                             *(f"{'sh' if path in shared else 'ex'}:{path}={said}"
                               for path, said in files.items())],
                            user=tenant.uid, group=tenant.gid, extra_groups=[],
                            env=tenant.env(), cwd=tenant.home, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def running_job(tenant, sweep_id: str):
    return wait_for(f"a running job of {tenant.short}'s sweep", lambda: [
        j for j in tenant.view(sweep_id).jobs if j.state == "running"])


def waiting_job(tenant, sweep_id: str):
    return wait_for(f"a waiting job of {tenant.short}'s sweep", lambda: [
        j for j in tenant.view(sweep_id).jobs if j.state == "waiting"])


def test_after_setup_no_user_can_delete_replace_or_plant_a_slot_file(protected_box):
    alice, bob = protected_box
    gate = alice.home / "gate"
    holding = alice.start(alice.sweep_file("hold", {"seed": [0]},
                                           {**ONE_GPU_ONE_CPU, "include_gpus": [0]},
                                           gate=str(gate)))
    running_job(alice, holding)
    later = bob.start(bob.sweep_file("later", {"seed": [0]},
                                     {**ONE_GPU_ONE_CPU, "include_gpus": [0]}))
    waiting = waiting_job(bob, later)
    assert "GPU" in waiting[0].reason, waiting[0].reason

    lock_dir = alice.lock_dir
    before = {e.name: e.inode() for e in os.scandir(lock_dir)}
    card = leases.card_path(lock_dir, UUIDS[0])
    attempts = {
        "rm -f": f"rm -f {lock_dir}/gpu.* {lock_dir}/cpu.*",
        "mv": f"mv {card} {lock_dir}/moved",
        "replace": f"echo {{}} > {lock_dir}/x && mv -f {lock_dir}/x {card}",
        "plant": f"mkfifo {lock_dir}/gpu.GPU-new.0",
        "symlink": f"ln -s /etc/passwd {lock_dir}/gpu.GPU-new",
        "write": f"echo garbage > {card}",
    }
    for what, script in attempts.items():
        done = bob.sh(script)
        assert done.returncode != 0, f"{what}: {script} was allowed"
        assert "ermission denied" in done.stderr or "not permitted" in done.stderr, done.stderr
    assert {e.name: e.inode() for e in os.scandir(lock_dir)} == before
    assert card.read_bytes() == b""

    # The GPU is still Alice's alone: Bob's job still waits, and runs once hers ended.
    assert [j.state for j in bob.view(later).jobs] == ["waiting"]
    status = bob.launch("status")
    assert status.returncode == 0, status.stderr
    assert "not protected" not in status.stdout
    gate.touch()
    alice.wait_ended(holding)
    assert [j.state for j in bob.wait_ended(later).jobs] == ["finished"]
    assert not shared_overlaps(alice.runs_of(holding) + bob.runs_of(later))


def test_without_setup_deleting_slot_files_is_possible_and_status_says_so(shared_box):
    alice, bob = shared_box
    first = alice.start(alice.sweep_file("first", {"seed": [0]}, ONE_GPU_ONE_CPU))
    alice.wait_ended(first)  # Alice made the lease directory: she owns it
    lock_dir = alice.lock_dir
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o1777 and lock_dir.stat().st_uid == alice.uid

    gate = bob.home / "gate"
    held = bob.start(bob.sweep_file("held", {"seed": [0]},
                                    {**ONE_GPU_ONE_CPU, "include_gpus": [1]}, gate=str(gate)))
    running_job(bob, held)
    # What a user "clearing stale locks" types; the sticky bit lets the directory's owner.
    done = alice.sh(f"rm -f {lock_dir}/gpu.* {lock_dir}/cpu.*")
    assert done.returncode == 0, done.stderr
    assert not list(lock_dir.glob("gpu.*"))
    for tenant in (alice, bob):
        status = tenant.launch("status")
        assert status.returncode == 0, status.stderr
        assert "leases: not protected" in status.stdout and "sudo launch setup" in status.stdout
        data = json.loads(tenant.launch("status", "--json").stdout)
        assert data["leases_protected"] is False
    gate.touch()
    assert [j.state for j in bob.wait_ended(held).jobs] == ["finished"]

    # The remedy the line names: after it, the same deletion is refused.
    setup_leases(alice.world, lock_dir)
    assert bob.sh(f"rm -f {lock_dir}/gpu.* {lock_dir}/cpu.*").returncode != 0
    assert alice.sh(f"rm -f {lock_dir}/gpu.* {lock_dir}/cpu.*").returncode != 0
    assert "not protected" not in bob.launch("status").stdout


def test_files_a_cotenant_plants_cost_a_gpu_and_never_a_supervisor_or_a_status(shared_box):
    alice, bob = shared_box
    lock_dir = bob.lock_dir
    # Bob makes the directory (as his first `launch` would) and plants files where slots go:
    # GPU UUIDs are public.
    plant = bob.sh(textwrap.dedent(f"""
        set -e
        mkdir -m 1777 {lock_dir} {lock_dir}/{leasedir.META_DIR}
        mkdir {lock_dir}/{leasedir.META_DIR}/{bob.uid}
        echo '{{"jobs_per_gpu": "zzz"}}' > {leases.card_path(lock_dir, UUIDS[0])}
        chmod 600 {leases.card_path(lock_dir, UUIDS[0])}
        mkfifo {leases.card_path(lock_dir, UUIDS[1])}
        ln -s /etc/passwd {leases.gpu_slot_path(lock_dir, UUIDS[2], 1)}
        : > {lock_dir}/cpu.0 && chmod 600 {lock_dir}/cpu.0
    """))
    assert plant.returncode == 0, plant.stderr
    # ... holds GPU 2 as an exclusive job would, saying anything, in escape codes too ...
    meta = lock_dir / leasedir.META_DIR / str(bob.uid)
    said = json.dumps({"user": ["x"], "job": 5, "sweep": f"s{ESCAPES}", "pid": -1,
                       "start": "yesterday", "host": ESCAPES, "jobs_per_gpu": "zzz"})
    notice = json.dumps({"sweep": "fake", "since": "x", "holding": "x", "wants": "all"})
    slot = leases.gpu_slot_path(lock_dir, UUIDS[2], 0)
    holder = hold(bob, {str(leases.card_path(lock_dir, UUIDS[2])): "", str(slot): said,
                        str(meta / slot.name): said,
                        str(meta / f"{fairshare.PREFIX}fake"): notice})
    try:
        # A packed sweep of Alice's: each of its jobs finds the one GPU left to it.
        sweep = alice.start(alice.sweep_file("planted", {"seed": [0, 1, 2]},
                                             {**ONE_GPU_ONE_CPU, "jobs_per_gpu": 2}))
        view = alice.wait_ended(sweep)
        assert [j.state for j in view.jobs] == ["finished"] * 3
        assert {r["cuda"] for r in alice.runs_of(sweep)} == {UUIDS[3]}
        for tenant, args in [(t, a) for t in (alice, bob)
                             for a in (["status"], ["status", "--full"], ["status", "--json"])
                             ] + [(alice, ["status", sweep])]:
            shown = tenant.launch(*args)
            assert shown.returncode == 0, f"{tenant.short} {args}: {shown.stderr}"
            assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
        full = alice.launch("status", "--full").stdout
        assert f"{bob.name} 5" in full, full  # his lease on GPU 2, shown as what it said
        assert holder.poll() is None  # nobody stopped Bob's process either
    finally:
        holder.kill()
    assert "root:" in open("/etc/passwd").read()  # nothing wrote through the links


def test_exclusive_never_shares_a_card_with_a_cotenants_packed_jobs(shared_box):
    alice, bob = shared_box
    one_card = {**ONE_GPU_ONE_CPU, "include_gpus": [0]}
    exclusive = alice.sweep_file("alone", {"seed": list(range(4))}, one_card)
    packed = bob.sweep_file("packed", {"seed": list(range(4))}, {**one_card, "jobs_per_gpu": 2})
    for round_ in range(20):
        # Both start at once, from processes of their own, racing for the one card.
        starts = [tenant.popen([tenant.world.python, "-m", "launcher.cli", "sweep", str(path),
                                "--detach"])
                  for tenant, path in ((alice, exclusive), (bob, packed))]
        assert [p.wait() for p in starts] == [0, 0], f"round {round_}"
        runs = []
        for tenant in (alice, bob):
            for sweep in os.listdir(tenant.runs):
                tenant.wait_ended(sweep)
                runs += tenant.runs_of(sweep)
        alone = [r for r in runs if r["user"] == "alice"]
        shared = [(a, b) for a, b in shared_overlaps(runs) if a in alone or b in alone]
        assert not shared, f"round {round_}: an exclusive job shared its card: {shared}"
    assert len(os.listdir(alice.runs)) == len(os.listdir(bob.runs)) == 20


def test_a_cotenants_notices_cannot_pass_as_anothers_nor_delay_a_sweep_for_long(shared_box):
    alice, bob = shared_box
    first = bob.start(bob.sweep_file("first", {"seed": [0]}, ONE_GPU_ONE_CPU))
    bob.wait_ended(first)
    lock_dir = bob.lock_dir
    meta = lock_dir / leasedir.META_DIR
    # Bob squats the folder that Alice's uid names, and writes notices there and in his own
    # folder claiming to be hers; each one valid in form, waiting for GPUs, holding none.
    squat = bob.sh(f"mkdir -m 755 {meta}/{alice.uid}")
    assert squat.returncode == 0, squat.stderr
    notice = json.dumps({"sweep": "x", "user": alice.name, "since": 1.0, "holding": 0})
    fakes = {str(meta / str(uid) / f"{fairshare.PREFIX}fake{k}"): notice
             for uid in (bob.uid, alice.uid) for k in range(8)}
    holder = hold(bob, fakes)
    try:
        seen = fairshare.waiters(lock_dir)
        assert {w.user for w in seen} == {bob.name} and len(seen) == 8  # his own folder's
        sweep = alice.start(alice.sweep_file("busy", {"seed": list(range(6))},
                                             {**ONE_GPU_ONE_CPU, "include_gpus": [0]}))
        view = alice.wait_ended(sweep)
        assert [j.state for j in view.jobs] == ["finished"] * 6
        log = alice.paths(sweep).root.joinpath("supervisor.log").read_text()
        gave_way = [line for line in log.splitlines() if "leaving a freed GPU" in line]
        # Eight fake sweeps, but once PASS_LIMIT windows went untaken Bob is ignored.
        assert len(gave_way) <= fairshare.PASS_LIMIT, log
    finally:
        holder.kill()


@pytest.mark.slow
def test_two_users_race_a_thousand_jobs_and_never_share_a_gpu(shared_box):
    alice, bob = shared_box
    two_cards = {**ONE_GPU_ONE_CPU, "include_gpus": [0, 1]}
    sweeps = {tenant: tenant.start(tenant.sweep_file("race", {"seed": list(range(520))},
                                                     two_cards, seconds=0))
              for tenant in (alice, bob)}
    runs = []
    for tenant, sweep in sweeps.items():
        view = tenant.wait_ended(sweep)
        assert {j.state for j in view.jobs} == {"finished"}
        runs += tenant.runs_of(sweep)
    assert len(runs) == 1040
    assert not shared_overlaps(runs)
