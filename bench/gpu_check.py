"""The Python half of bench/gpu_check.sh: each check one subcommand, its figures on stdout.

    python bench/gpu_check.py status-vs-smi DIR     launch status --json against nvidia-smi
    python bench/gpu_check.py repro OUT [--steps N] each model on CUDA (bf16, channels_last,
                                                    reproducible): one line of hashes per run
    python bench/gpu_check.py same-hashes A B       the two runs gave the same weights_sha256
    python bench/gpu_check.py loaders [--images N]  ResNet9 images/s: device loader, workers
                                                    loader at a 2-CPU budget, a ready GPU tensor
    python bench/gpu_check.py time-to-94 [--budget-s S]   Page's ResNet9 on the real CIFAR-10

`--cpu` runs a check on the CPU at a toy size, so that bench/gpu_check.sh can be tried where
there is no GPU (the figures then mean nothing; the code paths run).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = ("tutorial_cnn", "alexnet", "inception", "ensemble", "resnet9")
# Page's ResNet9 recipe ("How to train your ResNet", Myrtle's DAWNBench entry): batch 512,
# Nesterov SGD, lr up linearly to 0.4 over 5 of 24 epochs then down, weight decay 5e-4 (his
# summed loss with lr/512 and wd*512 is this on a mean loss), crop and flip.
PAGE = {"model": "resnet9", "resnet9_widths": "myrtle", "batch_size": 512, "epochs": 24,
        "augment": True, "optimizer": {"name": "sgd", "lr": 0.4, "momentum": 0.9,
                                       "nesterov": True, "weight_decay": 5e-4},
        "lr_schedule": {"name": "onecycle", "pct_start": 5 / 24}}


def smi(query: str, fields: str) -> list[dict]:
    """Returns nvidia-smi's CSV answer to --query-QUERY=FIELDS as dicts."""
    text = subprocess.run(["nvidia-smi", f"--query-{query}={fields}",
                           "--format=csv,noheader,nounits"], capture_output=True, text=True,
                          check=True).stdout
    names = fields.split(",")
    return [dict(zip(names, (v.strip() for v in row), strict=True))
            for row in csv.reader(io.StringIO(text)) if row]


def status_vs_smi(folder: Path) -> int:
    """Compares folder/status.json (launch status --json) with nvidia-smi; returns 0 if equal."""
    status = json.loads((folder / "status.json").read_text())
    gpus = {g["uuid"]: g for g in status["gpus"]}
    problems = []
    for row in smi("gpu", "index,uuid,memory.used,memory.total"):
        ours = gpus.get(row["uuid"])
        if ours is None:
            problems.append(f"GPU {row['index']} {row['uuid']}: not in launch status")
            continue
        # Both read NVML a moment apart, so used memory may move a little; drivers differ in
        # whether nvidia-smi's "used" counts the reserved part.
        used = [ours["memory_used_bytes"] / 2**20,
                (ours["memory_used_bytes"] + (ours["memory_reserved_bytes"] or 0)) / 2**20]
        if min(abs(u - float(row["memory.used"])) for u in used) > 64:
            problems.append(f"GPU {row['index']} used: status {used[0]:.0f} MiB (+ reserved "
                            f"{used[1]:.0f}), nvidia-smi {row['memory.used']} MiB")
        total = ours["memory_total_bytes"] / 2**20
        if abs(total - float(row["memory.total"])) > 1:
            problems.append(f"GPU {row['index']} total: status {total:.0f} MiB, nvidia-smi "
                            f"{row['memory.total']} MiB")
    theirs = {(a["gpu_uuid"], int(a["pid"])) for a in
              smi("compute-apps", "pid,gpu_uuid,used_memory")}
    ours = {(g["uuid"], p["pid"]) for g in status["gpus"] for p in g["processes"]
            if "C" in (p["type"] or "C")}  # nvidia-smi's compute apps: no graphics-only ones
    if theirs != ours:
        problems.append(f"processes: nvidia-smi {sorted(theirs)}, launch status {sorted(ours)}")
    print(f"status-vs-smi: {len(gpus)} GPU(s), {len(ours)} process(es): "
          + ("same memory, processes and UUIDs" if not problems else "; ".join(problems)))
    return 1 if problems else 0


def repro(out: Path, steps: int, cpu: bool) -> int:
    """Trains each model for `steps` steps and prints its weights_sha256; returns 0."""
    from jobs.train import train

    batch = 4 if cpu else 128
    for model in MODELS:
        spec = {"model": model, "dataset": "synthetic", "epochs": 1, "batch_size": batch,
                "val_size": 0, "reproducible": True, "bf16": True, "channels_last": True,
                "loader": "device", "device": "cpu" if cpu else "cuda",
                "synthetic": {"train_size": steps * batch, "test_size": 8 if cpu else 1024},
                "progress_every_s": 0}
        start = time.perf_counter()
        result = train(spec, out / model, log=lambda line: None)
        print(json.dumps({"model": model, "steps": steps, "weights_sha256":
                          result["weights_sha256"], "test_accuracy": result["test_accuracy"],
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    return 0


def same_hashes(a: Path, b: Path) -> int:
    """Prints whether two repro runs gave the same hashes per model; returns 0 if they did."""
    first, second = ({r["model"]: r["weights_sha256"] for r in map(json.loads,
                      p.read_text().splitlines())} for p in (a, b))
    differ = sorted(m for m in first if first[m] != second.get(m))
    print(f"reproducible: {len(first) - len(differ)} of {len(first)} models gave the same "
          "weights_sha256 twice" + (f"; differ: {', '.join(differ)}" if differ else ""))
    return 1 if differ or not first else 0


def job_rate(spec: dict, env: dict) -> float:
    """Returns the last epoch's training images/s of `python -m jobs` on spec."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.json"
        path.write_text(json.dumps(spec))
        subprocess.run([sys.executable, "-m", "jobs", str(path), "--out", f"{tmp}/job"],
                       cwd=REPO, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                       check=True, stdout=subprocess.DEVNULL)
        lines = (Path(tmp) / "job" / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["images_per_s"]


def ready_tensor_rate(spec: dict, epochs: int, cpu: bool) -> float:
    """Returns images/s of the job's own step fed from one tensor already on the device."""
    import torch
    import torch.nn.functional as F

    from jobs.models import build_model
    from jobs.optimizers import make_optimizer
    from jobs.spec import validate_spec

    spec = validate_spec(spec)
    device = torch.device("cpu" if cpu else "cuda")
    model = build_model(spec, torch.Generator().manual_seed(0)).to(
        device, memory_format=torch.channels_last)
    optimizer = make_optimizer(spec["optimizer"], model.parameters())
    n, batch = spec["synthetic"]["train_size"], spec["batch_size"]
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=not cpu)
    rate = 0.0
    for _ in range(epochs):  # the last epoch counts: the first pays for cuDNN's choices
        if not cpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n // batch):
            with autocast:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if not cpu:
            torch.cuda.synchronize()
        rate = n // batch * batch / (time.perf_counter() - start)
    return rate


def loaders(images: int, cpu: bool) -> int:
    """Prints ResNet9 images/s three ways and the goals' ratios; returns 0 if both are met."""
    epochs = 2
    spec = {"model": "resnet9", "dataset": "synthetic", "epochs": epochs, "batch_size": 512,
            "val_size": 0, "augment": True, "reproducible": False, "bf16": True,
            "channels_last": True, "device": "cpu" if cpu else "cuda",
            "synthetic": {"train_size": images, "test_size": 8 if cpu else 512},
            "progress_every_s": 0,
            "optimizer": {"name": "sgd", "lr": 0.1, "nesterov": True}}
    if cpu:
        spec.update(batch_size=8)
    limit = ready_tensor_rate(spec, epochs, cpu)
    device = job_rate({**spec, "loader": "device"}, {"OMP_NUM_THREADS": "1"})
    # A 2-CPU budget as the launcher splits it: one thread, one DataLoader worker.
    workers = job_rate({**spec, "loader": "workers", "num_workers": 1},
                       {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    print(f"resnet9 images/s, batch {spec['batch_size']}, bf16, channels_last, augment: "
          f"ready GPU tensor {limit:.0f}, device loader {device:.0f}, workers loader "
          f"(2 CPUs) {workers:.0f}")
    print(f"device / ready tensor = {device / limit:.3f} (goal >= 0.95); "
          f"device / workers = {device / workers:.2f} (goal >= 3)")
    met = device >= 0.95 * limit and device >= 3 * workers
    return 0 if met or cpu else 1  # on the CPU the figures mean nothing


def time_to_94(budget_s: float, cpu: bool) -> int:
    """Trains Page's ResNet9 on the real CIFAR-10 if it fits budget_s; prints time and accuracy."""
    from jobs.data import FOLDER, TEST_FILES, TRAIN_FILES, data_root
    from jobs.train import train

    root = data_root(None)
    if not all((root / FOLDER / f).exists() for f in TRAIN_FILES + TEST_FILES):
        print(f"time-to-94: skipped: no CIFAR-10 under {root} (set LAUNCH_DATA)")
        return 0
    spec = {**PAGE, "dataset": "cifar10", "download": False, "val_size": 0, "loader": "device",
            "bf16": True, "channels_last": True, "reproducible": False,
            "device": "cpu" if cpu else "cuda", "progress_every_s": 5}
    if cpu:  # the code path only: a few batches
        spec.update(epochs=1, batch_size=8, max_train_samples=16, max_test_samples=8,
                    resnet9_widths="standard")
    elif budget_s < 120:
        print(f"time-to-94: skipped: {budget_s:.0f} s left, a run needs about 120")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train(spec, tmp, log=lambda line: print("  " + line, flush=True))
        wall_s = time.perf_counter() - start
        metrics = [json.loads(ln) for ln in (Path(tmp) / "metrics.jsonl").read_text()
                   .splitlines()]
    n = spec.get("max_train_samples") or 50_000
    train_s = sum(n // spec["batch_size"] * spec["batch_size"] / m["images_per_s"]
                  for m in metrics)
    reached = result["test_accuracy"] >= 0.94
    print(f"time-to-94: Page's ResNet9 ({spec['resnet9_widths']}), {spec['epochs']} epochs: "
          f"test accuracy {result['test_accuracy']:.4f} ({'reached' if reached else 'not'} "
          f"94%) in {wall_s:.1f} s wall, {train_s:.1f} s of it training; last epoch "
          f"{metrics[-1]['images_per_s']:.0f} images/s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("status-vs-smi", "repro", "same-hashes", "loaders",
                                          "time-to-94"))
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--cpu", action="store_true", help="a toy run on the CPU")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--budget-s", type=float, default=600)
    args = parser.parse_args()
    if args.check == "status-vs-smi":
        return status_vs_smi(args.paths[0])
    if args.check == "repro":
        return repro(args.paths[0], 2 if args.cpu else args.steps, args.cpu)
    if args.check == "same-hashes":
        return same_hashes(*args.paths)
    if args.check == "loaders":
        return loaders(32 if args.cpu else args.images, args.cpu)
    return time_to_94(args.budget_s, args.cpu)


if __name__ == "__main__":
    sys.exit(main())
