"""The job's training loop against a bare PyTorch loop (the PRNG lecture's `fit`), on the CPU.

Same model (ResNet9 by default, drawn from the same generator), same synthetic
images, same batch size, same optimizer, in one process.  Epochs alternate
(bare, job, bare, job, ...) after one warm-up each, so a neighbour's load hits
both alike; the figure is the median of the per-pair ratios.  The job's side
is its own images_per_s from metrics.jsonl: the training loop with its loader,
metrics accumulation and signal checks; its whole train() call (data, build,
checkpoint, test) is printed beside it.

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_overhead.py [--model resnet9]
        [--images 2048] [--batch-size 256] [--reps 3]

(One thread keeps a shared box's load from swamping the comparison.)

Goal: job images/s >= 0.95 x bare images/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset

from jobs.data import CIFAR_MEAN, CIFAR_STD, make_synthetic
from jobs.models import build_model
from jobs.spec import validate_spec
from jobs.train import train


def fit(data, model, optimizer, criterion, epoch_num, batch_size, device, dl_rng):
    """The PRNG lecture's `fit`, verbatim but for the print."""
    model = model.to(device)
    _is_cuda = device.type == "cuda"
    _train_loader = DataLoader(dataset=data, batch_size=batch_size, drop_last=True, shuffle=True,
                               num_workers=0, pin_memory=_is_cuda, generator=dl_rng)
    _epoch_loss_train = []
    model.train()
    for _epoch in range(epoch_num):
        _loss = 0
        for _inputs, _labels in _train_loader:
            _inputs = _inputs.to(device)
            _labels = _labels.to(device)
            optimizer.zero_grad()
            _outputs = model(_inputs)
            _train_loss = criterion(_outputs, _labels)
            _train_loss.backward()
            optimizer.step()
            _loss += _train_loss.item()
        _loss /= len(_train_loader)
        _epoch_loss_train.append(_loss)
    return _epoch_loss_train


def bare_epoch(spec: dict, data: TensorDataset) -> float:
    """Returns images/s of one `fit` epoch of the PRNG lecture, setup excluded."""
    torch.use_deterministic_algorithms(False)  # the job turns it on globally; bare runs without
    model = build_model(spec, torch.Generator().manual_seed(0))
    opt = spec["optimizer"]
    optimizer = optim.SGD(model.parameters(), lr=opt["lr"], momentum=opt["momentum"],
                          nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])
    start = time.perf_counter()
    fit(data, model, optimizer, nn.CrossEntropyLoss(), 1, spec["batch_size"],
        torch.device("cpu"), torch.Generator().manual_seed(0))
    images = len(data) // spec["batch_size"] * spec["batch_size"]
    return images / (time.perf_counter() - start)


def job_epoch(spec: dict, out: Path) -> tuple[float, float]:
    """Returns (training-loop images/s, whole train() call seconds) of a one-epoch job."""
    start = time.perf_counter()
    train(spec, out, log=lambda line: None)
    call_s = time.perf_counter() - start
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return line["images_per_s"], call_s


def len_train(spec: dict) -> int:
    return spec["synthetic"]["train_size"] // spec["batch_size"] * spec["batch_size"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet9")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    spec = validate_spec({
        "model": args.model, "dataset": "synthetic", "device": "cpu", "epochs": 1,
        "batch_size": args.batch_size, "val_size": 0.0,
        "synthetic": {"train_size": args.images, "test_size": args.batch_size}})
    train_set, _ = make_synthetic(args.images, 1, 1.0, 0)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    images = (torch.from_numpy(train_set.images).float() / 255 - mean) / std
    data = TensorDataset(images, torch.from_numpy(train_set.labels))
    bare, loop, whole = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        bare_epoch(spec, data)  # warm-ups: allocator, thread pool, kernels
        job_epoch(spec, Path(tmp) / "warm")
        for rep in range(args.reps):
            bare.append(bare_epoch(spec, data))
            job = job_epoch(spec, Path(tmp) / f"rep{rep}")
            loop.append(job[0])
            whole.append(job[1])
    b, j, w = statistics.median(bare), statistics.median(loop), statistics.median(whole)
    print(f"model {args.model}, {len_train(spec)} images/epoch, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {args.reps} alternating reps (median)")
    print(f"bare seed-000 fit loop: {b:.1f} images/s   (reps: "
          + ", ".join(f"{v:.1f}" for v in bare) + ")")
    print(f"job training loop:      {j:.1f} images/s   (reps: "
          + ", ".join(f"{v:.1f}" for v in loop) + ")")
    print(f"job train() call, 1 epoch incl. data, build, checkpoint, test eval: {w:.1f} s "
          f"(the loop alone: {len_train(spec) / j:.1f} s)")
    paired = [jv / bv for jv, bv in zip(loop, bare, strict=True)]  # neighbours' load drifts
    print("paired ratios job/bare: " + ", ".join(f"{r:.3f}" for r in paired))
    print(f"ratio job/bare images/s = {statistics.median(paired):.3f}  "
          "(median of paired reps; goal >= 0.95)")


if __name__ == "__main__":
    main()
