"""nvidia-smi's CSV queries read into the records NVML gives: the recorded fixture, odd fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.machine.nvml import MIB
from launcher.machine.smi import parse_apps, parse_owners, parse_smi

SMI = Path(__file__).parents[1] / "fixtures" / "nvidia-smi"


def test_the_recorded_busy_box():
    snap = parse_smi((SMI / "query-gpu.csv").read_text(),
                     (SMI / "query-compute-apps.csv").read_text(),
                     parse_owners(" 48213 alice\n51877 bob\n"), "minerva")
    assert snap.host == "minerva" and snap.driver_version is None
    assert [g.index for g in snap.gpus] == [0, 1, 2, 3]
    first = snap.gpus[0]
    assert (first.name, first.uuid) == ("NVIDIA H100 80GB HBM3",
                                        "GPU-db9d8d6b-e602-6b87-fc1d-215cc16a5762")
    assert (first.memory_total_bytes, first.memory_used_bytes, first.memory_free_bytes) == (
        81559 * MIB, 41506 * MIB, 39524 * MIB)
    assert first.utilization_gpu_percent == 97 and first.temperature_c is None
    assert [(p.pid, p.user, p.command, p.memory_used_bytes // MIB) for p in first.processes] == [
        (48213, "alice", "python", 40960)]
    second = snap.gpus[1].processes
    assert [(p.pid, p.user, p.command) for p in second] == [
        (51877, "bob", "/home/bob/.venv/bin/python"), (60012, "?", "?")]  # [N/A]: no name
    assert snap.gpus[2].processes == ()


def test_fields_a_card_cannot_give_are_none():
    snap = parse_smi("0, GPU-1, NVIDIA A100-SXM4-40GB, 40960, [N/A], [Not Supported], [N/A]\n",
                     "GPU-1, 77, [N/A], python, with, commas\nNo running processes found\n",
                     {}, "h")
    gpu = snap.gpus[0]
    assert (gpu.memory_used_bytes, gpu.memory_free_bytes, gpu.utilization_gpu_percent) == (
        None, None, None)
    assert [(p.pid, p.memory_used_bytes, p.command) for p in gpu.processes] == [
        (77, None, "python, with, commas")]


def test_what_is_not_a_gpu_line_is_an_error():
    with pytest.raises(ValueError, match="not an nvidia-smi --query-gpu line: NVIDIA-SMI has"):
        parse_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                  "driver.\n", "", {}, "h")
    assert parse_apps("", {}) == {} and parse_smi("", "", {}, "h").gpus == ()
