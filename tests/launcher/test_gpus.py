"""The free-GPU policy, table-driven over the NVML fixtures."""

from pathlib import Path

import pytest

from launcher import contract
from launcher.machine import nvml
from launcher.machine.gpus import GpuPolicy, pick_gpus, units
from launcher.machine.leases import GpuLease

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"
MIB = 1024 * 1024


def load(name: str) -> nvml.Snapshot:
    import json

    return nvml.parse(json.loads((FIXTURES / f"{name}.json").read_text()))


def lease(snap: nvml.Snapshot, index: int, user: str, slot: int = 0) -> GpuLease:
    return GpuLease(snap.gpus[index].uuid, slot, user, "athena", 100 + slot, "sw-1", f"job-{slot}",
                    0.0)


# (fixture, policy, leases as (gpu index, user), user, count, chosen labels, reasons by label)
CASES = {
    "idle box, all free, ties by index": (
        "idle4", {}, [], "carol", 1, ["0", "1", "2", "3"], {}),
    "busy: other users' processes, own memory": (
        "busy4", {}, [], "carol", 1, ["2"],
        {"0": "GPU 0 used by alice, root",
         "1": "GPU 1 used by bob, pid 60012 (owner unknown)",
         "3": "GPU 3 has 20.5 GiB in use"}),
    "busy: other users allowed, memory still counts": (
        "busy4", {"other_users_block": False}, [], "carol", 1, ["2"],
        {"0": "GPU 0 has 40.5 GiB in use", "1": "GPU 1 has 3.0 GiB in use"}),
    "busy: explicit memory threshold above what bob uses": (
        "busy4", {"other_users_block": False, "max_memory_used_mib": 4000}, [], "carol", 1,
        ["2", "1"], {"0": "GPU 0 has 40.5 GiB in use"}),
    "excluded": (
        "busy4", {"exclude": ("2",)}, [], "carol", 1, [], {"2": "GPU 2 excluded"}),
    "include list, by index and by UUID prefix": (
        "idle4", {"include": ("1", "GPU-56a67f8c")}, [], "carol", 1, ["1", "3"],
        {"0": "GPU 0 excluded", "2": "GPU 2 excluded"}),
    "leave one free for others": (
        "idle4", {"leave_free": 1}, [], "carol", 1, ["0", "1", "2"],
        {"3": "GPU 3 left free for others (leave_free=1)"}),
    "leave all free": (
        "idle4", {"leave_free": 4}, [], "carol", 1, [], {"0": "GPU 0 left free for others"}),
    "leased by another user of this tool": (
        "idle4", {}, [(0, "bob")], "carol", 1, ["1", "2", "3"],
        {"0": "GPU 0 leased by bob (sw-1/job-0)"}),
    "jobs_per_gpu=2 fills our GPU first, sized by measured memory": (
        "busy4", {"jobs_per_gpu": 2}, [(3, "carol")], "carol", 1, ["3", "2"], {}),
    "jobs_per_gpu=2 with declared memory that does not fit": (
        "busy4", {"jobs_per_gpu": 2, "job_memory_mib": 70000}, [(3, "carol")], "carol", 1, ["2"],
        {"3": "GPU 3 has 58.6 GiB free (yours 20.0 GiB)"}),
    "jobs_per_gpu=2, both slots taken": (
        "busy4", {"jobs_per_gpu": 2}, [(3, "carol"), (3, "carol")], "carol", 1, ["2"],
        {"3": "GPU 3 leased by carol (sw-1/job-0)"}),
    "jobs_per_gpu=2 never shares with another user": (
        "idle4", {"jobs_per_gpu": 2}, [(0, "bob")], "carol", 1, ["1", "2", "3"],
        {"0": "GPU 0 leased by bob"}),
    "MIG devices are units; most free memory first": (
        "mig", {}, [], "carol", 1, ["1", "0:1"],
        {"0:0": "GPU 0:0 used by frank", "0:2": "GPU 0:2 used by grace"}),
    "lost GPU": (
        "lost", {}, [], "carol", 1, ["0", "1"],
        {"2": "GPU 2 lost (GpuIsLost)", "3": "GPU 3 used by erin"}),
    "NotSupported fields do not block": (
        "notsupported", {}, [], "carol", 1, ["0"], {"1": "GPU 1 used by dave"}),
    "mixed models, most free memory first": (
        "mixed", {}, [], "carol", 1, ["1", "2"], {"0": "GPU 0 used by henry, root"}),
    "two GPUs wanted, one free": (
        "busy4", {}, [], "carol", 2, ["2"], {"1": "GPU 1 used by bob"}),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_policy(case):
    fixture, policy_kw, held, user, count, chosen, reasons = CASES[case]
    snap = load(fixture)
    slots: dict[int, int] = {}
    leases = []
    for index, holder in held:
        # The holders are earlier jobs of a sweep with the same jobs_per_gpu.
        leases.append(lease(snap, index, holder, slots.get(index, 0))._replace(
            jobs_per_gpu=policy_kw.get("jobs_per_gpu", 1)))
        slots[index] = slots.get(index, 0) + 1
    choice = pick_gpus(snap, leases, GpuPolicy(**policy_kw), user, count)
    assert [u.label for u in choice.candidates] == chosen
    assert choice.ok == (len(chosen) >= count)
    rejected = dict(choice.rejected)
    for label, reason in reasons.items():
        assert rejected[label].startswith(reason), (label, rejected[label])
    assert not set(rejected) & set(chosen)


def test_utilisation_must_be_low_in_every_sample():
    snap = load("idle4")
    hot = snap.gpus[1]._replace(utilization_gpu_percent=55)
    earlier = snap._replace(gpus=(snap.gpus[0], hot, *snap.gpus[2:]))
    choice = pick_gpus(snap, [], GpuPolicy(), "carol", 1, earlier=[earlier])
    assert [u.label for u in choice.candidates] == ["0", "2", "3"]
    assert dict(choice.rejected)["1"] == "GPU 1 busy (55% utilisation)"


@pytest.mark.parametrize("used_mib,free", [(600, True), (1700, False)])
def test_default_memory_threshold_is_2_percent_of_a_big_card(used_mib, free):
    snap = load("idle4")  # 80 GiB cards: 2% is 1638 MiB, above the 512 MiB floor
    gpu = snap.gpus[0]._replace(memory_used_bytes=used_mib * MIB)
    snap = snap._replace(gpus=(gpu,))
    assert pick_gpus(snap, [], GpuPolicy(), "carol", 1).ok is free


def test_reason_says_what_a_waiting_job_waits_for():
    choice = pick_gpus(load("busy4"), [], GpuPolicy(exclude=("2",)), "carol", 1)
    assert choice.reason() == (
        "need 1 GPU, 0 free: GPU 0 used by alice, root; "
        "GPU 1 used by bob, pid 60012 (owner unknown); GPU 2 excluded; GPU 3 has 20.5 GiB in use")


def job_env(uuids: list[str]) -> dict[str, str]:
    env = contract.job_env({}, sweep_id="s", job_id="j", job_dir=Path("/j"), num_workers=0,
                           num_threads=1, gpus=uuids, seed=0)
    return {k: env[k] for k in ("CUDA_DEVICE_ORDER", "CUDA_VISIBLE_DEVICES")}


def test_job_env_names_devices_by_uuid_in_pci_order():
    snap = load("mixed")
    # CUDA's default FASTEST_FIRST would call the 4090 device 0; NVML and PCI order say 1.
    choice = pick_gpus(snap, [], GpuPolicy(include=("1",)), "carol", 1)
    env = job_env(choice.uuids[:1])
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                   "CUDA_VISIBLE_DEVICES": snap.gpus[1].uuid}
    assert snap.gpus[1].name == "NVIDIA GeForce RTX 4090"


def test_mig_units_carry_mig_uuids():
    snap = load("mig")
    labels = {u.label: u.uuid for _, u in units(snap)}
    assert labels["0:1"] == snap.gpus[0].mig_devices[1].uuid
    assert labels["0:1"].startswith("MIG-") and labels["1"].startswith("GPU-")
    env = job_env([labels["0:1"]])
    assert env["CUDA_VISIBLE_DEVICES"].startswith("MIG-")


def test_packing_never_joins_a_sweep_that_asked_for_the_gpu_alone():
    snap = load("idle4")
    alone = lease(snap, 0, "me")._replace(jobs_per_gpu=1)
    sharing = lease(snap, 1, "me")._replace(jobs_per_gpu=2)
    policy = GpuPolicy(jobs_per_gpu=2, job_memory_mib=1000, include=("0", "1"))
    choice = pick_gpus(snap, [alone, sharing], policy, "me")
    assert [u.label for u in choice.candidates] == ["1"]
    assert any("GPU 0 leased by me" in why for _, why in choice.rejected)
