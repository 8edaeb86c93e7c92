"""Progress within an epoch: when a line is due, what it says, what it costs; TensorBoard."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml
from jobhelpers import tiny_spec

from jobs import spec as jobspec
from jobs.__main__ import main as jobs_main
from jobs.progress import EpochProgress
from jobs.spec import SpecError, validate_spec
from jobs.train import train
from launcher.cli import main as launch_main
from launcher.contract import PROGRESS_FILE
from launcher.rundir.layout import JobPaths
from launcher.show.views import epoch_progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reporter(tmp_path, clock, lines, every_s=10.0, batch=0, seen=0) -> EpochProgress:
    return EpochProgress(every_s, tmp_path, epoch=1, epochs=2, batches=100, batch=batch,
                         seen=seen, log=lines.append, elapsed_s=lambda: 12.0, clock=clock)


def test_a_line_is_due_every_so_often_and_says_where_the_epoch_stands(tmp_path):
    clock, lines = Clock(), []
    progress = reporter(tmp_path, clock, lines)
    clock.now = 9.9
    assert not progress.due()
    clock.now = 10.0
    assert progress.due()
    # 25 batches of 32 in 10 s: 2.5 batches/s; 75 left in this epoch, 100 in the next.
    record = progress.report(25, 800, torch.tensor(1600.0, dtype=torch.float64), step=25)
    assert lines == ["progress: epoch 1/2 batch 25/100 (25%) train_loss 2.0000 80 img/s "
                     "eta epoch 30s, job 1m10s"]
    on_disk = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert on_disk == record
    assert (record["epoch_eta_s"], record["eta_s"], record["elapsed_s"]) == (30.0, 70.0, 12.0)
    clock.now = 19.9
    assert not progress.due(), "the next line is every_s after the last, not after the start"
    clock.now = 20.0
    assert progress.due()


def test_a_resumed_epoch_counts_only_the_batches_this_run_did(tmp_path):
    clock, lines = Clock(), []
    progress = reporter(tmp_path, clock, lines, batch=50, seen=1600)
    clock.now = 10.0
    record = progress.report(60, 1920, 3840.0, step=60)
    assert record["images_per_s"] == 32.0 and record["epoch_eta_s"] == 40.0
    assert record["train_loss"] == 2.0  # over the whole epoch's samples, before the resume too


def test_zero_turns_progress_off(tmp_path):
    clock, lines = Clock(), []
    progress = reporter(tmp_path, clock, lines, every_s=0)
    clock.now = 1e9
    assert not progress.due()


def test_a_job_logs_progress_and_writes_what_the_launcher_reads(tmp_path):
    lines: list[str] = []
    train(tiny_spec(progress_every_s=1e-9), tmp_path / "on", log=lines.append)
    said = [line for line in lines if line.startswith("progress: ")]
    # 360 images in batches of 32: 11 a epoch, a line after each but the last of each epoch.
    assert len(said) == 2 * 10, lines
    assert said[0].startswith("progress: epoch 1/2 batch 1/11 (9%) train_loss ")
    assert said[-1].startswith("progress: epoch 2/2 batch 10/11 (90%) ")
    # The launcher's reader takes the job's record as the second epoch in progress.
    record = epoch_progress(JobPaths(tmp_path / "on"), 1, started=None)
    assert record is not None and record["batch"] == 10 and record["batches"] == 11
    lines.clear()
    train(tiny_spec(progress_every_s=0), tmp_path / "off", log=lines.append)
    assert not [line for line in lines if line.startswith("progress")]
    assert not (tmp_path / "off" / PROGRESS_FILE).exists()


def reads_from_the_device(monkeypatch, out, batch_size: int) -> int:
    """Returns how many times one job read a tensor's value on the host."""
    count = [0]
    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
            original = getattr(torch.Tensor, name)

            def counting(self, *args, _original=original):
                count[0] += 1
                return _original(self, *args)

            patch.setattr(torch.Tensor, name, counting)
        # Lines are never due: the day to the first one outlasts the job. SGD: torch's Adam
        # reads its own CPU step counters per step, which no GPU waits for.
        spec = tiny_spec(progress_every_s=86400, batch_size=batch_size, val_size=0, epochs=1,
                         optimizer={"name": "sgd", "lr": 0.01},
                         synthetic={"train_size": 256, "test_size": 32})
        train(spec, out, log=lambda line: None)
    return count[0]


def test_the_loop_reads_no_device_value_per_batch(monkeypatch, tmp_path):
    # On CUDA each read waits for the GPU: the count must not grow with the batches.
    few = reads_from_the_device(monkeypatch, tmp_path / "few", 64)
    many = reads_from_the_device(monkeypatch, tmp_path / "many", 8)
    assert few == many, (few, many)


@pytest.fixture
def no_tensorboard(monkeypatch):
    """This Python as it is without the tensorboard package."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    jobspec.tensorboard_installed.cache_clear()
    yield
    monkeypatch.undo()
    jobspec.tensorboard_installed.cache_clear()


def test_tensorboard_without_the_package_is_an_error_before_anything_runs(
        no_tensorboard, tmp_path, capsys, runs):
    with pytest.raises(SpecError, match="tensorboard package") as exc:
        validate_spec({"tensorboard": True})
    assert exc.value.key == "tensorboard" and "[tensorboard]" in exc.value.message
    validate_spec({"tensorboard": False})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tensorboard": True}))
    assert jobs_main([str(spec), "--check"]) == 2
    assert "tensorboard: true needs the tensorboard package" in capsys.readouterr().err
    sweep = tmp_path / "tb.yaml"
    sweep.write_text(yaml.safe_dump({"name": "tb", "job": {"model": "tutorial_cnn"},
                                     "grid": {"tensorboard": [False, True]}}))
    assert launch_main(["sweep", str(sweep), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("launch: error: ") and str(sweep) in err
    assert "tensorboard" in err and "pip install" in err
    assert not list(runs.glob("tb-*")), "planning stopped before any sweep folder"


def test_tensorboard_events_lie_beside_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_spec(tensorboard=True, progress_every_s=1e-9), tmp_path, log=lambda line: None)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"epoch/train_loss", "epoch/val_accuracy", "epoch/lr", "train/loss_running",
            "test/accuracy"} <= tags
    metrics = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [round(e.value, 5) for e in events.Scalars("epoch/val_accuracy")] == \
        [round(m["val_accuracy"], 5) for m in metrics]
