"""Leases: exclusive flock slots that die with their holder, in a safe shared directory."""

import json
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.machine import cpus, gpus, holders, leases, nvml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"
META = {"user": "alice", "host": "athena", "pid": 1, "sweep": "s-1", "job": "j-1", "start": 1.5}


@pytest.fixture
def lock_dir(lock_dir) -> Path:
    """The shared fixture's lease directory, made (mode 1777) as a supervisor makes it."""
    return leases.lock_dir()


def test_lock_dir_is_1777_whatever_the_umask(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCH_LOCK_DIR", str(tmp_path / "d"))
    old = os.umask(0o077)
    try:
        path = leases.lock_dir()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o1777
    slot = leases.try_lock_slot(path / "cpu.0", META)
    assert stat.S_IMODE(os.fstat(slot.fd).st_mode) == 0o666  # others write their metadata too


def test_a_slot_has_one_holder_and_metadata(lock_dir):
    path = leases.gpu_slot_path(lock_dir, "GPU-abc", 0)
    first = leases.try_lock_slot(path, {**META, "uuid": "GPU-abc", "slot": 0})
    assert first is not None and (first.key, first.slot) == ("GPU-abc", 0)
    assert leases.try_lock_slot(path, META) is None  # a second open file: refused at once
    [held] = leases.read_gpu_leases(lock_dir)
    assert held == leases.GpuLease("GPU-abc", 0, "alice", "athena", 1, "s-1", "j-1", 1.5)
    first.write_meta({**first.meta, "pid": 4242})
    assert leases.read_gpu_leases(lock_dir)[0].pid == 4242
    first.release()
    assert leases.read_gpu_leases(lock_dir) == ()
    assert path.exists()  # never unlinked
    assert leases.try_lock_slot(path, META) is not None


def test_acquire_gpus_is_all_or_nothing_and_fills_slots(lock_dir):
    two = leases.acquire_gpus(["GPU-a", "GPU-b"], 2, 1, META, lock_dir)
    assert [(lease.key, lease.slot) for lease in two] == [("GPU-a", 0), ("GPU-b", 0)]
    assert leases.acquire_gpus(["GPU-a", "GPU-b", "GPU-c"], 2, 1, META, lock_dir) is None
    assert not holders.read_slots([leases.gpu_slot_path(lock_dir, "GPU-c", 0)])[0].held
    shared = leases.acquire_gpus(["GPU-a"], 1, 2, META, lock_dir)  # jobs_per_gpu=2
    assert [(lease.key, lease.slot) for lease in shared] == [("GPU-a", 1)]
    assert leases.acquire_gpus(["GPU-a"], 1, 2, META, lock_dir) is None


def test_slots_of_our_own_running_jobs_are_not_tried(lock_dir, monkeypatch):
    tried = []
    real = leases.try_lock_slot
    monkeypatch.setattr(leases, "try_lock_slot", lambda p, m: tried.append(p.name) or real(p, m))
    ours = {leases.gpu_slot_path(lock_dir, "GPU-a", 0), cpus.token_path(lock_dir, 0)}
    (got,) = leases.acquire_gpus(["GPU-a", "GPU-b"], 1, 2, META, lock_dir, skip=ours)
    assert (got.key, got.slot) == ("GPU-a", 1) and tried == ["gpu.GPU-a.1"]
    (token,) = cpus.acquire_cpus(1, 2, META, lock_dir, skip=ours)
    assert token.path.name == "cpu.1" and tried[1:] == ["cpu.1"]


def test_old_style_mig_uuid_with_slashes_gets_a_flat_file(lock_dir):
    uuid = "MIG-GPU-5f3c1d2e-aaaa-bbbb-cccc-000011112222/1/0"
    [lease] = leases.acquire_gpus([uuid], 1, 1, META, lock_dir)
    assert lease.path.parent == lock_dir and lease.key == uuid
    assert leases.read_gpu_leases(lock_dir)[0].uuid == uuid


def test_symlinked_slot_file_is_refused_and_its_target_untouched(lock_dir, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.symlink(victim, lock_dir / "cpu.0")
    with pytest.raises(leases.LeaseError, match="symbolic link"):
        leases.try_lock_slot(lock_dir / "cpu.0", META)
    assert victim.read_text() == "precious\n"
    assert holders.read_slots([lock_dir / "cpu.0"])[0].held is False


def test_hard_linked_slot_file_is_refused(lock_dir, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.link(victim, lock_dir / "cpu.1")
    with pytest.raises(leases.LeaseError, match="one link"):
        leases.try_lock_slot(lock_dir / "cpu.1", META)
    assert victim.read_text() == "precious\n"


def test_symlinked_lock_dir_is_refused(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "leases")
    monkeypatch.setenv("LAUNCH_LOCK_DIR", str(tmp_path / "leases"))
    with pytest.raises(leases.LeaseError, match="not a plain directory"):
        leases.lock_dir()


HOLDER = """
import sys, time
from launcher.machine import leases
lease = leases.try_lock_slot(sys.argv[1], {"user": "bob", "job": "held"})
print("held" if lease else "busy", flush=True)
time.sleep(60)
"""


def test_sigkilled_holder_frees_the_slot_at_once(lock_dir):
    path = lock_dir / "gpu.GPU-k.0"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert leases.try_lock_slot(path, META) is None
        state = holders.read_slots([path])[0]
        assert state.held and state.meta["user"] == "bob"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # No retry loop: once the holder is reaped, the kernel has dropped its lock.
    assert leases.try_lock_slot(path, META) is not None


SUPERVISOR = """
import subprocess, sys
from launcher.machine import leases
lease = leases.try_lock_slot(sys.argv[1], {"user": "bob"})
job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                       pass_fds=(lease.fd,), start_new_session=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
lease.close()
print(job.pid, flush=True)
"""


def test_lease_passed_to_the_job_outlives_the_supervisor(lock_dir):
    path = lock_dir / "gpu.GPU-p.0"
    out = subprocess.run([sys.executable, "-c", SUPERVISOR, str(path)], capture_output=True,
                         text=True, check=True)
    job_pid = int(out.stdout)
    try:
        assert leases.try_lock_slot(path, META) is None  # the supervisor is gone, the job holds
    finally:
        os.kill(job_pid, signal.SIGKILL)
    # The job is not our child, so its end is not ours to wait for: poll until it is gone.
    deadline = time.monotonic() + 10
    while (lease := leases.try_lock_slot(path, META)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lease is not None


def test_reading_leases_never_turns_an_acquirer_away(lock_dir):
    path = lock_dir / "cpu.7"
    stop = threading.Event()

    def read_forever():
        while not stop.is_set():
            holders.read_slots([path])

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for _ in range(300):
            lease = leases.try_lock_slot(path, META)
            assert lease is not None
            lease.release()
    finally:
        stop.set()
        reader.join()


def test_proc_locks_is_read_once_and_only_when_a_slot_file_exists(lock_dir, monkeypatch):
    reads = []
    real = holders._flock_inodes
    monkeypatch.setattr(holders, "_flock_inodes", lambda: reads.append(1) or real())
    locks = holders.HeldLocks()
    assert leases.read_gpu_leases(lock_dir, locks) == () and reads == []
    held = leases.try_lock_slot(lock_dir / "cpu.0", META)
    free = leases.try_lock_slot(lock_dir / "cpu.1", META)
    free.release()
    states = holders.read_slots([lock_dir / "cpu.0", lock_dir / "cpu.1"], locks)
    assert [s.held for s in states] == [True, False] and states[0].meta["user"] == "alice"
    holders.read_slots([lock_dir / "cpu.0"], locks)
    assert reads == [1]  # one /proc/locks read answers every call that shares the HeldLocks
    ahead = holders.HeldLocks()
    ahead.read_ahead(lock_dir)  # in a thread, while status asks NVML
    states = holders.read_slots([lock_dir / "cpu.0", lock_dir / "cpu.1"], ahead)
    assert [s.held for s in states] == [True, False] and reads == [1, 1]
    held.release()


def test_read_ahead_of_an_empty_lease_directory_reads_nothing(lock_dir, monkeypatch):
    monkeypatch.setattr(holders, "_flock_inodes", lambda: pytest.fail("read /proc/locks"))
    locks = holders.HeldLocks()
    locks.read_ahead(lock_dir)
    locks.read_ahead(lock_dir / "missing")
    assert leases.read_gpu_leases(lock_dir, locks) == ()


def _racer(barrier, lock_dir: str, snapshot, rounds: int, queue) -> None:
    wins, clashes = 0, 0
    policy = gpus.GpuPolicy()
    for _ in range(rounds):
        barrier.wait()
        held = leases.read_gpu_leases(Path(lock_dir))
        choice = gpus.pick_gpus(snapshot, held, policy, "racer", 1)
        # Everybody sees the same free GPUs and tries them in the same order: the worst case.
        got = leases.acquire_gpus(choice.uuids, 1, 1, {"pid": os.getpid()}, Path(lock_dir))
        if got:
            wins += 1
            marker = f"{got[0].path}.holder"
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                clashes += 1
            else:
                threading.Event().wait(0.002)
                os.close(fd)
                os.unlink(marker)
            got[0].release()
        barrier.wait()
    queue.put((wins, clashes))


def test_race_eight_processes_fifty_rounds_never_two_holders(lock_dir, monkeypatch):
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(FIXTURES / "idle4.json"))
    snapshot = nvml.query()
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(barrier, str(lock_dir), snapshot, 50, queue))
             for _ in range(8)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    assert all(p.exitcode == 0 for p in procs)
    assert sum(clash for _, clash in results) == 0
    # Four slots and eight takers: at least four win every round.
    assert sum(win for win, _ in results) >= 4 * 50


def test_meta_is_json_in_the_held_file(lock_dir):
    lease = leases.try_lock_slot(lock_dir / "cpu.3", META)
    assert json.loads((lock_dir / "cpu.3").read_text()) == META
    lease.write_meta({"user": "a"})
    assert json.loads((lock_dir / "cpu.3").read_text()) == {"user": "a"}  # no stale tail


def test_an_unsafe_slot_further_on_does_not_strand_held_leases(lock_dir, tmp_path):
    os.symlink(tmp_path / "nowhere", leases.gpu_slot_path(lock_dir, "GPU-b", 0))
    with pytest.raises(leases.LeaseError):
        leases.acquire_gpus(["GPU-a", "GPU-b"], 2, 1, META, lock_dir)
    assert not holders.read_slots([leases.gpu_slot_path(lock_dir, "GPU-a", 0)])[0].held
