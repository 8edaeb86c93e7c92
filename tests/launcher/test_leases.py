"""Leases: flocks on slot files that die with their holder, in a directory co-tenants share.

The tests here run as one user; tests/cotenants/ runs the same attacks as real second users.
"""

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

from launcher.machine import cpus, gpus, holders, leasedir, leases, nvml
from launcher.machine.users import current_user

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"
META = {"user": "alice", "host": "athena", "pid": 1, "sweep": "s-1", "job": "j-1", "start": 1.5}
ME = current_user()


@pytest.fixture
def lock_dir(lock_dir) -> Path:
    """The shared fixture's lease directory, made (mode 1777) as a supervisor makes it."""
    return leasedir.lock_dir()


def held(lock_dir: Path, name: str) -> holders.SlotState:
    return holders.read_slots(lock_dir, [name])[0]


def test_lock_dir_is_1777_whatever_the_umask_and_slot_files_are_never_written(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("LAUNCH_LOCK_DIR", str(tmp_path / "d"))
    old = os.umask(0o077)
    try:
        path = leasedir.lock_dir()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o1777
    slot = leases.try_lock_slot(path / "cpu.0", META)
    assert stat.S_IMODE(os.fstat(slot.lock_fds[0]).st_mode) == 0o644
    assert (path / "cpu.0").read_bytes() == b""  # what the holder says goes in its own file
    assert stat.S_IMODE(os.lstat(path / "meta").st_mode) == 0o1777


def test_a_slot_has_one_holder_and_its_metadata_names_its_real_user(lock_dir):
    path = leases.gpu_slot_path(lock_dir, "GPU-abc", 0)
    first = leases.try_lock_slot(path, {**META, "uuid": "GPU-abc", "slot": 0})
    assert first is not None and (first.key, first.slot) == ("GPU-abc", 0)
    assert leases.try_lock_slot(path, META) is None  # a second open file: refused at once
    [lease] = leases.read_gpu_leases(lock_dir)
    # "alice" is what the holder wrote; the user is whoever owns its metadata folder.
    assert lease == leases.GpuLease("GPU-abc", 0, ME, "athena", 1, "s-1", "j-1", 1.5)
    first.write_meta({**first.meta, "pid": 4242})
    assert leases.read_gpu_leases(lock_dir)[0].pid == 4242
    first.release()
    assert leases.read_gpu_leases(lock_dir) == ()
    assert path.exists()  # never unlinked
    assert leases.try_lock_slot(path, META) is not None


def test_acquire_gpus_is_all_or_nothing(lock_dir):
    two = leases.acquire_gpus(["GPU-a", "GPU-b"], 2, 1, META, lock_dir)
    assert [(lease.key, lease.slot) for lease in two] == [("GPU-a", 0), ("GPU-b", 0)]
    assert leases.acquire_gpus(["GPU-a", "GPU-b", "GPU-c"], 2, 1, META, lock_dir) is None
    assert not held(lock_dir, leases.gpu_slot_path(lock_dir, "GPU-c", 0).name).held
    shared = leases.acquire_gpus(["GPU-c"], 1, 2, META, lock_dir)  # jobs_per_gpu=2
    assert [(lease.key, lease.slot) for lease in shared] == [("GPU-c", 0)]
    assert [lease.slot for lease in leases.acquire_gpus(["GPU-c"], 1, 2, META, lock_dir)] == [1]
    assert leases.acquire_gpus(["GPU-c"], 1, 2, META, lock_dir) is None


def test_a_job_that_wants_the_card_alone_never_shares_it_with_a_packed_one(lock_dir):
    alone = leases.acquire_gpus(["GPU-x"], 1, 1, META, lock_dir)
    for jobs_per_gpu in (2, 4):  # whoever's, however many they pack
        assert leases.acquire_gpus(["GPU-x"], 1, jobs_per_gpu, META, lock_dir) is None
    alone[0].release()
    packed = leases.acquire_gpus(["GPU-x"], 1, 4, META, lock_dir)
    assert packed[0].slot == 0
    assert leases.acquire_gpus(["GPU-x"], 1, 1, META, lock_dir) is None  # slot 1 free: no
    packed[0].release()
    assert leases.acquire_gpus(["GPU-x"], 1, 1, META, lock_dir) is not None


def test_slots_of_our_own_running_jobs_are_not_tried(lock_dir, monkeypatch):
    tried = []
    real = leases.open_slot
    monkeypatch.setattr(leases, "open_slot", lambda p, c=True: tried.append(p.name) or real(p, c))
    ours = {leases.gpu_slot_path(lock_dir, "GPU-a", 0), cpus.token_path(lock_dir, 0)}
    (got,) = leases.acquire_gpus(["GPU-a", "GPU-b"], 1, 2, META, lock_dir, skip=ours)
    assert (got.key, got.slot) == ("GPU-a", 1) and tried == ["gpu.GPU-a", "gpu.GPU-a.1"]
    (token,) = cpus.acquire_cpus(1, 2, META, lock_dir, skip=ours)
    assert token.path.name == "cpu.1" and tried[2:] == ["cpu.1"]


def test_old_style_mig_uuid_with_slashes_gets_a_flat_file(lock_dir):
    uuid = "MIG-GPU-5f3c1d2e-aaaa-bbbb-cccc-000011112222/1/0"
    [lease] = leases.acquire_gpus([uuid], 1, 1, META, lock_dir)
    assert lease.path.parent == lock_dir and lease.key == uuid
    assert leases.read_gpu_leases(lock_dir)[0].uuid == uuid


def plant(lock_dir: Path, name: str, kind: str, victim: Path) -> None:
    """Put at a slot name what a careless or hostile co-tenant could put there."""
    path = lock_dir / name
    if kind == "symlink":
        os.symlink(victim, path)
    elif kind == "hard link":
        os.link(victim, path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("{}")
        path.chmod(0o000)  # as another user's 0600 file is to us (root reads anything)


@pytest.mark.parametrize("kind", ["symlink", "hard link", "fifo"])
def test_a_planted_slot_file_costs_that_gpu_never_the_supervisor(lock_dir, tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    plant(lock_dir, "gpu.GPU-b", kind, victim)
    with pytest.raises(leases.Unusable, match="gpu.GPU-b is "):
        leases.lock_gpu(lock_dir, "GPU-b", 1, META)
    unusable: dict[str, str] = {}
    got = leases.acquire_gpus(["GPU-a", "GPU-b", "GPU-c"], 2, 1, META, lock_dir,
                              unusable=unusable)
    assert [lease.key for lease in got] == ["GPU-a", "GPU-c"]
    assert list(unusable) == ["GPU-b"] and "owned by" in unusable["GPU-b"]
    assert victim.read_text() == "precious\n"
    assert leases.read_gpu_leases(lock_dir) and not held(lock_dir, "gpu.GPU-b").held


def test_a_planted_cpu_token_is_passed_over(lock_dir, tmp_path):
    plant(lock_dir, "cpu.0", "fifo", tmp_path)
    if cpus.machine_cpus() < 2:
        pytest.skip("needs two CPUs: one token is planted")
    (token,) = cpus.acquire_cpus(1, 2, META, lock_dir)
    assert token.path.name == "cpu.1"


def test_symlinked_lock_dir_is_refused(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "linked")
    monkeypatch.setenv("LAUNCH_LOCK_DIR", str(tmp_path / "linked"))
    with pytest.raises(leasedir.LeaseError, match="not a plain directory"):
        leasedir.lock_dir()


@pytest.mark.parametrize("said", [
    {"jobs_per_gpu": "zzz", "user": "bob"},
    {"user": ["x"], "job": 5, "sweep": {"a": 1}, "pid": "many", "start": "soon"},
    {"user": "\x1b[2J\x1b[31mroot", "job": "j\x07\x1b]0;owned\x07", "host": "a\nb"},
    {"uuid": "GPU-other", "slot": -3, "jobs_per_gpu": 0},
    "not a mapping",
])
def test_whatever_a_holder_writes_is_read_as_what_it_is(lock_dir, said):
    # The version before meta folders wrote metadata into the slot file itself; a co-tenant
    # can still write anything there (and into their own meta folder).
    path = leases.gpu_slot_path(lock_dir, "GPU-m", 0)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    os.write(fd, json.dumps(said).encode())
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        [lease] = leases.read_gpu_leases(lock_dir)
    finally:
        os.close(fd)
    assert lease.uuid == "GPU-m" and lease.slot == 0 and lease.jobs_per_gpu >= 1
    for text in (lease.user, lease.host, lease.sweep or "", lease.job or ""):
        assert isinstance(text, str) and text.isprintable()
    assert lease.pid is None or isinstance(lease.pid, int)


def test_a_stale_or_planted_meta_file_is_not_a_holder(lock_dir):
    lease = leases.try_lock_slot(lock_dir / "cpu.2", META)
    lease.release()  # its metadata file stays, unheld
    assert held(lock_dir, "cpu.2") == holders.SlotState(lock_dir / "cpu.2", False, {})
    fake = lock_dir / "meta" / "4242"  # a folder named for another uid, made by us
    fake.mkdir()
    (fake / "cpu.2").write_text(json.dumps({"sweep": "forged"}))
    token = leases.try_lock_slot(lock_dir / "cpu.2", {"sweep": "real"})
    assert held(lock_dir, "cpu.2").meta["sweep"] == "real"
    token.release()


HOLDER = """
import sys, time
from launcher.machine import leases
lease = leases.try_lock_slot(sys.argv[1], {"sweep": "bobs", "job": "held"})
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
        state = held(lock_dir, path.name)
        assert state.held and state.meta["sweep"] == "bobs"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # No retry loop: once the holder is reaped, the kernel has dropped its lock.
    assert leases.try_lock_slot(path, META) is not None


SUPERVISOR = """
import subprocess, sys
from launcher.machine import leases
lease = leases.try_lock_slot(sys.argv[1], {"sweep": "s"})
job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                       pass_fds=lease.fds, start_new_session=True,
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
        assert held(lock_dir, path.name).meta["sweep"] == "s"  # and so does its metadata
    finally:
        os.kill(job_pid, signal.SIGKILL)
    # The job is not our child, so its end is not ours to wait for: poll until it is gone.
    deadline = time.monotonic() + 10
    while (lease := leases.try_lock_slot(path, META)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lease is not None


def test_reading_leases_never_turns_an_acquirer_away(lock_dir):
    stop = threading.Event()

    def read_forever():
        while not stop.is_set():
            holders.read_slots(lock_dir, ["cpu.7"])

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for _ in range(300):
            lease = leases.try_lock_slot(lock_dir / "cpu.7", META)
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
    taken = leases.try_lock_slot(lock_dir / "cpu.0", META)
    free = leases.try_lock_slot(lock_dir / "cpu.1", META)
    free.release()
    states = holders.read_slots(lock_dir, ["cpu.0", "cpu.1"], locks)
    assert [s.held for s in states] == [True, False] and states[0].meta["sweep"] == "s-1"
    holders.read_slots(lock_dir, ["cpu.0"], locks)
    assert reads == [1]  # one /proc/locks read answers every call that shares the HeldLocks
    ahead = holders.HeldLocks()
    ahead.read_ahead(lock_dir)  # in a thread, while status asks NVML
    states = holders.read_slots(lock_dir, ["cpu.0", "cpu.1"], ahead)
    assert [s.held for s in states] == [True, False] and reads == [1, 1]
    taken.release()


def test_read_ahead_of_an_empty_lease_directory_reads_nothing(lock_dir, monkeypatch):
    monkeypatch.setattr(holders, "_flock_inodes", lambda: pytest.fail("read /proc/locks"))
    locks = holders.HeldLocks()
    locks.read_ahead(lock_dir)
    locks.read_ahead(lock_dir / "missing")
    assert leases.read_gpu_leases(lock_dir, locks) == ()


def _racer(barrier, lock_dir: str, snapshot, rounds: int, jobs_per_gpu: int, queue) -> None:
    wins, clashes = 0, 0
    policy = gpus.GpuPolicy(jobs_per_gpu=jobs_per_gpu)
    for _ in range(rounds):
        barrier.wait()
        seen = leases.read_gpu_leases(Path(lock_dir))
        choice = gpus.pick_gpus(snapshot, seen, policy, "racer", 1)
        # Everybody sees the same free GPUs and tries them in the same order: the worst case.
        got = leases.acquire_gpus(choice.uuids, 1, jobs_per_gpu, {"pid": os.getpid()},
                                  Path(lock_dir))
        if got:
            wins += 1
            # An exclusive holder marks the card; a packed one its slot: never both at once.
            card = f"{leases.card_path(Path(lock_dir), got[0].key)}.holder"
            marker = card if jobs_per_gpu == 1 else f"{got[0].path}.holder"
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                clashes += 1
            else:
                exclusive_there = jobs_per_gpu > 1 and os.path.exists(card)
                clashes += exclusive_there
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
    # Half want cards alone, half pack two to a card.
    procs = [ctx.Process(target=_racer, args=(barrier, str(lock_dir), snapshot, 50,
                                             1 if i % 2 else 2, queue)) for i in range(8)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    assert all(p.exitcode == 0 for p in procs)
    assert sum(clash for _, clash in results) == 0
    assert sum(win for win, _ in results) >= 2 * 50  # a busy card turns only the others away


def test_meta_is_json_in_the_holders_own_file_without_a_stale_tail(lock_dir):
    lease = leases.try_lock_slot(lock_dir / "cpu.3", META)
    mine = lock_dir / "meta" / str(os.getuid()) / "cpu.3"
    assert json.loads(mine.read_text()) == META
    assert stat.S_IMODE(mine.stat().st_mode) == 0o644 and mine.stat().st_uid == os.getuid()
    lease.write_meta({"user": "a"})
    assert json.loads(mine.read_text()) == {"user": "a"}


def test_a_protected_directory_never_creates_slot_files(tmp_path, monkeypatch):
    monkeypatch.setattr(leases, "protected", lambda directory: True)  # as after `launch setup`
    (tmp_path / "meta").mkdir(mode=0o1777)
    with pytest.raises(leases.Unusable, match="sudo launch setup"):
        leases.lock_gpu(tmp_path, "GPU-new", 1, META)
    assert not (tmp_path / "gpu.GPU-new").exists()
