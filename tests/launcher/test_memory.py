"""GPU memory: needs declared or learned, placement that fits, out-of-memory recognised and
retried where it fits, and rendezvous ports for jobs of several GPUs.

The GPUs are snapshots the tests write (and rewrite, atomically, while a sweep runs: a
colleague's process appears, grows, goes); the jobs are real processes
(tests/launcher/fake_job.py, the built-in job) under a real supervisor.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rundirs import job_dir, job_ids, state_of, view_of
from test_executor import (
    FAKE_JOB,
    gated_sweep,
    overlapping,
    running,
    runs_of,
    side_by_side,
    start,
    sweep_file,
    wait_ended,
    wait_for,
)

from launcher import contract
from launcher.cli import main
from launcher.machine import leasedir, memory, nvml, ports
from launcher.machine.gpus import GpuPolicy, pick_gpus
from launcher.machine.leases import GpuLease
from launcher.machine.users import current_user
from launcher.rundir import state as js
from launcher.rundir.store import this_run

GIB = 1024**3
ME = current_user()


# -- snapshots the tests write -----------------------------------------------------------------

def card(index: int, total_gib: float, procs: list[tuple[int, str, float]] = ()) -> dict:
    """Return one GPU of a snapshot: total memory, and (pid, user, GiB) processes on it."""
    used = sum(int(g * GIB) for _, _, g in procs)
    total = int(total_gib * GIB)
    return {"index": index, "name": "NVIDIA A16", "uuid": f"GPU-{index:08d}-test-card",
            "pci_bus_id": f"00000000:{index + 1:02X}:00.0",
            "memory": {"total": total, "reserved": 0, "used": used, "free": total - used},
            "utilization": {"gpu": 0, "memory": 0}, "temperature_c": 30,
            "fan_percent": 0, "power_mw": 50000, "power_limit_mw": 250000, "mig_mode": 0,
            "mig_devices": [],
            "processes": [{"pid": pid, "used_memory": int(g * GIB), "type": "C"}
                          for pid, _, g in procs]}


def write_snapshot(path: Path, cards: list[dict]) -> None:
    """Replace the snapshot file in one rename: a reader sees the old machine or the new."""
    owners = {str(p["pid"]): {"user": user, "cmdline": ["python", "train.py"]}
              for c, procs in cards for p, (_, user, _) in zip(c["processes"], procs,
                                                               strict=True)}
    raw = {"format": nvml.FORMAT, "host": "testbox", "driver_version": "550.1",
           "cuda_driver_version": 12040, "init_error": None,
           "devices": [c for c, _ in cards], "processes": owners}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(raw))
    os.replace(tmp, path)


def machine(path: Path, *gpus: tuple[float, list[tuple[int, str, float]]]) -> None:
    """Write a machine of GPUs, each (total GiB, [(pid, user, GiB), ...])."""
    write_snapshot(path, [(card(i, total, procs), procs) for i, (total, procs) in
                          enumerate(gpus)])


@pytest.fixture
def box(lab, monkeypatch) -> Path:
    """Return the snapshot file every command of the test reads its GPUs from."""
    path = lab / "gpus.json"
    monkeypatch.setenv(nvml.SNAPSHOT_ENV, str(path))
    return path


def pid_of(sweep_id: str, job_id: str) -> int:
    return wait_for("the job to write its pid",
                    lambda: (job_dir(sweep_id, job_id) / "pid").exists() and
                    int((job_dir(sweep_id, job_id) / "pid").read_text()))


# -- the words: out-of-memory messages, oom lines, wait lines ----------------------------------

# What frameworks print when the GPU's memory runs out, as users met them.
REAL_OOM_LINES = [
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 19.68 GiB. GPU 0 has a "
    "total capacity of 23.68 GiB of which 11.88 GiB is free. Including non-PyTorch memory, "
    "this process has 11.79 GiB memory in use. Of the allocated memory 11.44 GiB is allocated "
    "by PyTorch, and 43.59 MiB is reserved by PyTorch but unallocated.",
    "RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.78 GiB total "
    "capacity; 14.56 GiB already allocated; 3.75 MiB free; 14.71 GiB reserved in total by "
    "PyTorch)",
    "OutOfMemoryError: CUDA out of memory. Tried to allocate 256.00 MiB. GPU 0 has a total "
    "capacity of 47.53 GiB of which 16.88 MiB is free. Process 3652628 has 47.51 GiB memory "
    "in use.",
    "RuntimeError: CUDA error: out of memory",
    "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "cudaErrorMemoryAllocation: out of memory",
    "NCCL WARN Cuda failure 'out of memory'",
    "jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
    "19.59GiB. [executable_name='jit_concatenate']",
    "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating "
    "tensor with shape[32,1024,64,64] and type float on /job:localhost/replica:0/task:0/"
    "device:GPU:0 by allocator GPU_0_bfc",
    "E tensorflow/stream_executor/cuda/cuda_driver.cc:806] failed to allocate 13.76G "
    "(14773796864 bytes) from device: CUDA_ERROR_OUT_OF_MEMORY: out of memory",
    "cupy.cuda.memory.OutOfMemoryError: Out of memory allocating 800,000,000 bytes "
    "(allocated so far: 0 bytes).",
    "terminate called after throwing an instance of 'c10::OutOfMemoryError'\n  what():  CUDA "
    "out of memory. Tried to allocate 2.00 GiB.",
]
# Host memory, and words that only look alike: more GPU memory would not help these.
NOT_GPU_OOM = [
    "RuntimeError: [enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: can't "
    "allocate memory: you tried to allocate 85899345920 bytes. Error code 12 (Cannot allocate "
    "memory)",
    "MemoryError: Unable to allocate 64.0 GiB for an array with shape (8589934592,)",
    "ResourceExhaustedError: OOM when allocating tensor with shape[1024,1024] and type float "
    "on /job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu",
    "Killed",
    "epoch 3/10 train_loss 0.41 (no out-of-memory this time)",
]


@pytest.mark.parametrize("line", REAL_OOM_LINES)
def test_every_framework_s_out_of_memory_message_is_recognised(line):
    assert contract.out_of_memory_line("step 10\n" + line + "\nexiting") is not None


@pytest.mark.parametrize("line", NOT_GPU_OOM)
def test_host_memory_and_lookalikes_are_not_gpu_out_of_memory(line):
    assert contract.out_of_memory_line(line) is None


def test_only_the_last_run_s_output_counts():
    tail = f"{REAL_OOM_LINES[0]}\n[launch] 2026-01-01 12:00:00 run 2 starts\nImportError: x"
    assert this_run(tail) == "ImportError: x"
    assert not js.ran_out_of_memory(1, None, tail)
    assert js.ran_out_of_memory(1, None, tail + "\n" + REAL_OOM_LINES[3])
    assert js.ran_out_of_memory(contract.EXIT_OOM, None, "")
    assert not js.ran_out_of_memory(1, js.STOP_CANCEL, REAL_OOM_LINES[0])  # a cancel is one


def test_an_oom_end_is_retried_without_max_retries_then_fails_like_any_other():
    oom = js.OomEnd(gpus="2", held_bytes=int(10.8 * GIB), free_bytes=int(1.1 * GIB),
                    cause="alice's process grew", need_bytes=12 * GIB, spent=0, allowed=2)
    first = js.end_of_run(1, None, None, retries_left=0, oom=oom)
    assert first == js.Outcome(js.OOM, "oom on GPU 2 at 10.8 GiB (1.1 GiB free: alice's "
                               "process grew); retry 1/2 waits for 12.0 GiB free", True)
    spent = js.end_of_run(1, None, None, retries_left=0, oom=oom._replace(spent=2))
    assert spent.state == js.FAILED and not spent.retry
    assert "oom_retries (2) spent" in spent.reason
    again = js.end_of_run(1, None, None, retries_left=1, oom=oom._replace(spent=2))
    assert again.state == js.PENDING and again.retry  # max_retries still applies after
    assert js.end_of_run(0, None, None, 0, oom=oom).state == js.FINISHED


def test_whose_process_took_the_memory():
    clock = iter(range(100)).__next__
    watch = memory.Watch("j", 10, None, "0", clock)
    alice = nvml.GpuProcess(20, 2 * GIB, "C", "alice", "?")
    watch.see(memory.Look(5 * GIB, 9 * GIB, (alice,), ("0",)))
    assert watch.cause(ME) is None
    watch.see(memory.Look(5 * GIB, GIB, (alice._replace(memory_used_bytes=10 * GIB),), ("0",)))
    assert watch.cause(ME) == "alice's process grew"
    bob = nvml.GpuProcess(30, 4 * GIB, "C", "bob", "?")
    watch.see(memory.Look(5 * GIB, GIB, (alice, bob), ("0",)))
    assert watch.cause(ME) == "bob's process appeared"
    fields = memory.oom_fields(watch, None, 0.1, ME)
    assert fields["need_bytes"] == memory.with_margin(5 * GIB, 0.1)
    assert (fields["gpus"], fields["held_bytes"], fields["free_bytes"]) == ("0", 5 * GIB, GIB)


def test_a_job_s_processes_are_found_by_pid_down_its_tree(tmp_path):
    # A job whose GPU work runs in a child (a torchrun rank, a worker): NVML lists the child.
    child_pid = tmp_path / "child"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); open(sys.argv[1], 'w').write(str(c.pid)); "
        "time.sleep(60)"), str(child_pid)])
    try:
        pid = int(wait_for("the child", lambda: child_pid.exists() and child_pid.read_text()))
        raw = {"format": nvml.FORMAT, "devices": [card(0, 16, [(pid, ME, 3), (4242, "bob", 2)])],
               "processes": {str(pid): {"user": ME}, "4242": {"user": "bob"}}}
        snap = nvml.parse(raw)
        owner = memory.owners(snap, {parent.pid: "job-a"}, lambda p: None)
        assert owner == {pid: "job-a"}
        look = memory.look_at(snap, None, {parent.pid, *owner})
        assert (look.held_bytes, look.labels) == (3 * GIB, ("0",))
    finally:
        parent.kill()
        parent.wait()


def holder(snap: nvml.Snapshot, need_gib: float | None, pid: int = 100) -> GpuLease:
    need = None if need_gib is None else int(need_gib * GIB)
    return GpuLease(snap.gpus[0].uuid, 0, ME, "h", pid, "sw", "j", 0.0, 16, need)


def one_card(total_gib: float, procs=()) -> nvml.Snapshot:
    raw = {"format": nvml.FORMAT,
           "devices": [card(0, total_gib, [(p, u, g) for p, u, g in procs])],
           "processes": {str(p): {"user": u} for p, u, _ in procs}}
    return nvml.parse(raw)


AUTO = GpuPolicy(jobs_per_gpu=16, pack_by_memory=True, job_memory_mib=10 * 1024)


@pytest.mark.parametrize("total_gib,fits", [(16, False), (24, True)])
def test_packed_jobs_count_what_their_neighbours_were_promised(total_gib, fits):
    # The job already there has allocated nothing yet: NVML alone would say 16 GiB free.
    snap = one_card(total_gib)
    choice = pick_gpus(snap, [holder(snap, 10)], AUTO, ME)
    assert choice.ok is fits
    if not fits:
        assert choice.reason() == ("needs 10.0 GiB: GPU 0 has 6.0 GiB free "
                                   "(promised to yours 10.0 GiB)")


def test_what_a_neighbour_already_uses_is_not_counted_twice():
    snap = one_card(24, [(100, ME, 8)])  # the job there holds 8 of its 10 GiB
    assert pick_gpus(snap, [holder(snap, 10)], AUTO, ME).ok  # 16 free, 2 promised: 14 > 10


def test_nothing_packs_beside_a_job_whose_need_is_not_known_yet():
    snap = one_card(80)
    choice = pick_gpus(snap, [holder(snap, None)], AUTO, ME)
    assert not choice.ok
    assert "GPU 0 runs a job of yours whose memory use is not known yet" in choice.reason()


def test_the_wait_line_says_it_in_numbers():
    snap = one_card(24, [(4242, "bob", 17.2), (4243, "carol", 3.8)])
    need = memory.policy_for(GpuPolicy(), memory.Need(int(9.1 * GIB)))
    choice = pick_gpus(snap, [], need, ME)
    assert choice.reason() == "needs 9.1 GiB: GPU 0 has 3.0 GiB free (bob 17.2 GiB, carol 3.8 GiB)"


def test_a_job_that_ran_out_gets_a_card_of_its_own():
    policy = memory.policy_for(AUTO, memory.Need(12 * GIB, alone=True))
    assert (policy.jobs_per_gpu, policy.pack_by_memory, policy.job_memory_mib) == \
        (1, False, 12 * 1024)
    assert memory.policy_for(AUTO, memory.Need()) is AUTO


def test_the_replayed_snapshot_is_read_afresh_on_every_look(box):
    machine(box, (16, []))
    assert nvml.query().gpus[0].processes == ()
    machine(box, (16, [(4242, "alice", 5)]))
    assert [p.user for p in nvml.query().gpus[0].processes] == ["alice"]


# -- a supervisor and real jobs ------------------------------------------------------------

ONE_GPU = {"gpus_per_job": 1, "include_gpus": [0], "cpu_budget": 2, "cpus_per_job": 1}


def gated_file(path: Path, name: str, gates: list[Path], resources: dict, **extra) -> Path:
    """Write a sweep of fake jobs, one per gate, each waiting for its gate file."""
    gated_sweep(path, name, gates, resources)
    doc = yaml.safe_load(path.read_text())
    doc["job"].update(extra.pop("job", {}))
    doc.update(extra)
    path.write_text(yaml.safe_dump(doc))
    return path


def seeded_file(path: Path, name: str, gates: Path, seeds: int, resources: dict) -> Path:
    """Write a sweep of one configuration, seeds times: job seed=N waits for gates/N."""
    gates.mkdir()
    sweep_file(path, name, {"seed": list(range(seeds))}, resources, job={
        "seconds": 0.2, "gate": str(gates), "command": [
            sys.executable, str(FAKE_JOB), "{behaviour}", "{seconds}", "{gate}/{seed}"]})
    return path


def peak_is(sweep_id: str, job_id: str, gib: float) -> bool:
    return state_of(sweep_id, job_id).gpu_memory_peak_bytes == int(gib * GIB)


def test_a_command_job_out_of_memory_is_retried_where_it_fits(box, capsys):
    machine(box, (16, []))
    gate = box.parent / "gate"
    path = gated_file(box.parent / "oom.yaml", "oom", [gate], ONE_GPU, max_retries=0,
                      job={"behaviour": "oom-once"})
    sweep_id = start(path)
    (job_id,) = job_ids(sweep_id)
    pid = pid_of(sweep_id, job_id)
    # It grows to 5 GiB, then to 10 while a colleague's process takes 5 GiB of the rest. Each
    # step is seen once the supervisor has written the job's new peak.
    machine(box, (16, [(pid, ME, 5)]))
    wait_for("its 5 GiB to be seen", lambda: peak_is(sweep_id, job_id, 5))
    machine(box, (16, [(pid, ME, 10), (4242, "alice", 5)]))
    wait_for("its 10 GiB to be seen", lambda: peak_is(sweep_id, job_id, 10))
    gate.touch()  # it prints PyTorch's out-of-memory traceback and exits 1
    st = wait_for("the oom", lambda: (s := state_of(sweep_id, job_id)).state == js.OOM and s)
    line = ("oom on GPU 0 at 10.0 GiB (1.0 GiB free: alice's process appeared); retry 1/2 "
            "waits for 11.0 GiB free")
    assert st.reason.startswith(line), st.reason
    assert (st.oom_retries, st.gpu_memory_need_bytes) == (1, 11 * GIB)
    assert "CUDA out of memory" in st.log_tail
    capsys.readouterr()
    assert main(["status", sweep_id]) == 0
    assert line in capsys.readouterr().out
    # NVML still lists alice and the job's dead process: the retry waits, and says for what.
    wait_for("the wait in numbers", lambda: "GPU 0 has 1.0 GiB free" in (
        state_of(sweep_id, job_id).reason or ""))
    assert state_of(sweep_id, job_id).state == js.OOM
    machine(box, (16, []))
    (job,) = wait_ended(sweep_id).jobs
    assert (job.state, job.runs) == ("finished", 2)  # max_retries: 0 was not spent on it
    st = state_of(sweep_id, job_id)
    assert (st.oom_retries, st.oom_held_bytes, st.oom_free_bytes) == (1, 10 * GIB, GIB)
    assert st.gpu_memory_peak_bytes == 10 * GIB


AUTO_ONE_GPU = {**ONE_GPU, "jobs_per_gpu": "auto"}


@side_by_side
@pytest.mark.parametrize("total_gib,together", [(16, False), (24, True)])
def test_declared_needs_share_a_card_only_where_both_fit(box, total_gib, together):
    machine(box, (total_gib, []))
    gates = [box.parent / f"g{i}" for i in range(2)]
    path = gated_file(box.parent / "pack.yaml", "pack", gates,
                      {**AUTO_ONE_GPU, "gpu_memory_mib": 10 * 1024})
    sweep_id = start(path)
    wait_for("a job to run", lambda: running(sweep_id))
    if together:
        wait_for("both to run at once", lambda: len(running(sweep_id)) == 2)
    else:
        (waiting,) = wait_for("the second to wait", lambda: [
            j for j in view_of(sweep_id).jobs if j.state == "waiting"])
        assert waiting.reason == ("needs 10.0 GiB: GPU 0 has 6.0 GiB free "
                                  "(promised to yours 10.0 GiB)")
        assert len(running(sweep_id)) == 1
    for gate in gates:
        gate.touch()
    assert {j.state for j in wait_ended(sweep_id).jobs} == {"finished"}
    runs = [r for rs in runs_of(sweep_id).values() for r in rs]
    assert bool(overlapping(runs)) is together


@side_by_side
def test_a_learned_need_packs_the_siblings_of_the_first_job(box):
    machine(box, (24, []))
    gates = box.parent / "gates"
    sweep_id = start(seeded_file(box.parent / "learn.yaml", "learn", gates, 4, AUTO_ONE_GPU))
    (first,) = wait_for("the first job", lambda: running(sweep_id))
    pid = pid_of(sweep_id, first.job_id)
    machine(box, (24, [(pid, ME, 10)]))
    wait_for("its memory to be seen", lambda: peak_is(sweep_id, first.job_id, 10))
    # While its need is not known, nothing packs beside it: its siblings wait.
    (head,) = wait_for("a sibling to wait", lambda: [
        j for j in view_of(sweep_id).jobs if j.state == "waiting"])
    assert "GPU 0 runs a job of yours whose memory use is not known yet" in head.reason
    assert [j.job_id for j in running(sweep_id)] == [first.job_id]
    (gates / str(first.params["seed"])).touch()
    wait_for("the first to end", lambda: state_of(sweep_id, first.job_id).state == "finished")
    machine(box, (24, []))  # its process is gone from the card
    # 10 GiB plus 10%: two siblings fit the 24 GiB card, the third waits for memory (the
    # CPU budget, checked after the GPUs, would let it wait for CPUs only once it fitted).
    need = memory.with_margin(10 * GIB, 0.1)
    assert 2 * need <= 24 * GIB < 3 * need
    wait_for("two to run at once", lambda: len(running(sweep_id)) == 2)
    (third,) = wait_for("the third to wait", lambda: [
        j for j in view_of(sweep_id).jobs if j.state == "waiting"])
    assert third.reason == (f"needs {nvml.gib(need)}: GPU 0 has {nvml.gib(24 * GIB - 2 * need)}"
                            f" free (promised to yours {nvml.gib(2 * need)})")
    for seed in range(4):
        (gates / str(seed)).touch()
    assert {j.state for j in wait_ended(sweep_id).jobs} == {"finished"}
    runs = [r for rs in runs_of(sweep_id).values() for r in rs]
    most = max(sum(1 for o in runs if o["start"] <= r["start"] < o["end"]) for r in runs)
    assert most == 2
    by_job = runs_of(sweep_id)
    (alone,) = by_job.pop(first.job_id)
    assert all(o["start"] >= alone["end"] for rs in by_job.values() for o in rs)


def test_a_job_waiting_for_memory_starts_once_it_is_freed(box):
    machine(box, (16, [(4242, "bob", 10)]))
    path = sweep_file(box.parent / "w.yaml", "freed", {"seed": [0]},
                      {**ONE_GPU, "gpu_memory_mib": 9 * 1024}, job={"seconds": 0.1})
    sweep_id = start(path)
    (job,) = wait_for("the job to wait", lambda: [
        j for j in view_of(sweep_id).jobs if j.state == "waiting"])
    assert job.reason == "needs 9.0 GiB: GPU 0 has 6.0 GiB free (bob 10.0 GiB)"
    freed_at = time.time()
    machine(box, (16, []))  # bob's process ends
    (job,) = wait_ended(sweep_id).jobs
    assert job.state == "finished"
    (run,) = runs_of(sweep_id)[job.job_id]
    # What started it was the change: no job ended meanwhile, nothing else moved. The
    # supervisor looks again at every tick (placement.SNAPSHOT_MAX_AGE_S < local POLL_S / 2).
    assert run["start"] > freed_at


SPEC = {"model": "tutorial_cnn", "dataset": "synthetic",
        "synthetic": {"train_size": 400, "test_size": 200}, "val_size": 0.1, "epochs": 2,
        "batch_size": 8, "device": "cpu", "optimizer": {"name": "sgd", "lr": 0.01},
        "repeat": {}, "grad_noise": {"mode": "relative"}}


def test_the_built_in_job_out_of_memory_resumes_to_the_uninterrupted_weights(box, monkeypatch):
    from jobs.train import TEST_OOM_ENV

    machine(box, (16, []))
    ref = box.parent / "reference"
    (box.parent / "spec.json").write_text(json.dumps({**SPEC, "seed": 0}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCH_")}
    reference = subprocess.Popen(
        [sys.executable, "-m", "jobs", str(box.parent / "spec.json"), "--out", str(ref)],
        env={**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    path = box.parent / "builtin.yaml"
    path.write_text(yaml.safe_dump({"name": "builtin", "job": SPEC, "seeds": 1,
                                    "resources": ONE_GPU}))
    monkeypatch.setenv(TEST_OOM_ENV, "60")  # the supervisor and its jobs inherit it
    sweep_id = start(path)
    (job,) = wait_ended(sweep_id, timeout_s=300).jobs
    assert (job.state, job.runs) == ("finished", 2)
    st = state_of(sweep_id, job.job_id)
    assert st.oom_retries == 1 and st.exit_code == 0
    log = (job_dir(sweep_id, job.job_id) / "stdout.log").read_text()
    assert "checkpoint at epoch 2 batch 15 (step 60) written" in log
    assert "resuming at epoch 2 batch 15" in log
    assert reference.wait(timeout=300) == 0
    ours = json.loads((job_dir(sweep_id, job.job_id) / "result.json").read_text())
    theirs = json.loads((ref / "result.json").read_text())
    assert ours["weights_sha256"] == theirs["weights_sha256"]


# -- rendezvous ports --------------------------------------------------------------------------

def listening() -> socket.socket:
    """Return a socket listening on a free port (something else's server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@side_by_side
def test_jobs_of_several_gpus_never_share_a_master_port(lab, monkeypatch):
    server = listening()
    taken = server.getsockname()[1]
    monkeypatch.setenv(ports.PORTS_ENV, f"{taken}-{taken + 40}")
    gates = [lab / f"g{i}" for i in range(2)]
    res = {"gpus_per_job": 2, "cpu_budget": 2, "cpus_per_job": 1}
    sweep_id = start(gated_file(lab / "ddp.yaml", "ddp", gates, res))
    try:
        wait_for("both to run at once", lambda: len(running(sweep_id)) == 2)
        held = {j.job_id: state_of(sweep_id, j.job_id).master_port for j in running(sweep_id)}
        assert len(set(held.values())) == 2 and taken not in held.values()
        assert all(taken < p <= taken + 40 for p in held.values())
        for port in held.values():  # held for the job's life, by the job
            lease = leases_try(lab / "leases", port)
            assert lease is None, port
    finally:
        server.close()
        for gate in gates:
            gate.touch()
    view = wait_ended(sweep_id)
    assert {j.state for j in view.jobs} == {"finished"}
    for job in view.jobs:
        (run,) = runs_of(sweep_id)[job.job_id]
        assert run["master"] == ["127.0.0.1", str(held[job.job_id])]
        assert run["torchrun"] == run["master"]  # what torchrun reads when told no port
        assert run["num_gpus"] == "2"


def leases_try(directory: Path, port: int):
    from launcher.machine import leases

    lease = leases.try_lock_slot(ports.port_path(directory, port), {})
    if lease is not None:
        lease.release()
    return lease


def test_a_port_something_listens_on_is_passed_over(lock_dir, monkeypatch):
    lock_dir = leasedir.lock_dir()  # made, 1777, as a supervisor makes it
    server = listening()
    taken = server.getsockname()[1]
    try:
        monkeypatch.setenv(ports.PORTS_ENV, f"{taken}-{taken + 20}")
        assert not ports.port_free(taken)
        first = ports.acquire_port({"job": "a"}, lock_dir)
        second = ports.acquire_port({"job": "b"}, lock_dir)
        got = [ports.port_of(first), ports.port_of(second)]
        assert taken not in got and got[0] != got[1]
        assert oct(os.stat(first.path).st_mode & 0o777) == "0o644"  # made on demand
        first.release()
        second.release()
    finally:
        server.close()
    assert ports.port_free(taken)


@pytest.mark.skipif(os.geteuid() != 0, reason="launch setup runs as root")
def test_port_leases_in_a_protected_directory_use_the_files_setup_made(lock_dir, monkeypatch):
    from launcher.commands import setup

    monkeypatch.setenv(ports.PORTS_ENV, "40100-40103")
    names = [n for n in ports.slot_names() if n != "port.40100"]  # one the admin lacks
    setup.make_protected(lock_dir, names)
    assert leasedir.protected(lock_dir)
    lease = ports.acquire_port({"job": "a"}, lock_dir)
    if lease is None:
        pytest.skip("ports 40101-40103 are all in use on this machine")
    assert ports.port_of(lease) != 40100  # missing: Unusable, passed over, never created
    assert not (lock_dir / "port.40100").exists()
    st = os.stat(lease.path)
    assert st.st_uid == 0 and (st.st_mode & 0o777) == 0o444
    lease.release()


# -- what the follower says ----------------------------------------------------------------

def test_the_follower_says_the_oom_line_then_the_retry_once(runs):
    import io

    from rundirs import make_sweep, set_state

    from launcher.rundir.layout import SweepPaths
    from launcher.show import follow

    sweep_id, job_id = "oomf-20261122-221414", "a-s0-00000001"
    make_sweep(sweep_id, [(job_id, {"seed": 0}, {"epochs": 3})])
    paths = SweepPaths.of(sweep_id)
    line = ("oom on GPU 0 at 10.0 GiB (1.0 GiB free: alice's process appeared); retry 1/2 "
            "waits for 11.0 GiB free")
    run = {"runs": 1, "gpu_indices": [0], "started": 1795376000.0}
    set_state(paths, job_id, "running", attempt=1, **run)
    script = [
        lambda: set_state(paths, job_id, "oom", attempt=1, **run, exit_code=1, reason=line,
                          log_tail="torch.OutOfMemoryError: CUDA out of memory."),
        lambda: set_state(paths, job_id, "running", attempt=2, **{**run, "runs": 2}),
        lambda: set_state(paths, job_id, "finished", attempt=2, **{**run, "runs": 2},
                          ended=1795376100.0, exit_code=0),
    ]
    out = io.StringIO()
    assert follow.follow_sweep(paths, out=out, sleep=lambda _s: script.pop(0)()) == 0
    lines = [text.removeprefix(text[:9]).removeprefix(f"{job_id}  ") if text[:2].isdigit()
             else text for text in out.getvalue().splitlines()[1:]]
    assert lines == ["running on GPU 0", line,
                     "    | torch.OutOfMemoryError: CUDA out of memory.",
                     f"    all its output: launch logs {sweep_id}/{job_id}",
                     "running on GPU 0 (attempt 2)", "finished after 1m40s"]
