"""Proof on the real CIFAR-10: the PyTorch tutorial's recipe, bare and through our job, and
short runs of every model family, so a broken model, normalisation or augmentation shows as
a number.

(a) The PyTorch "Training a classifier" tutorial, written bare as it is there (torchvision's
    CIFAR10 with ToTensor and Normalize(0.5, 0.5), DataLoader batch 4, shuffle, 2 workers;
    its Net: conv 3->6->16, fc 120-84-10; SGD lr 0.001 momentum 0.9; 2 epochs), against
    our `tutorial_cnn` with the same recipe through `python -m jobs` (no validation split).
    Printed: test accuracy of each (the tutorial prints about 54%) and the ratio of their
    training images/s (goal: ours >= 0.95 x bare at batch 4, where per-batch cost shows).
(b) Every family of configs/cifar.yaml (alexnet, inception, ensemble, resnet9) with its
    recipe there, for one epoch on a subset (--subset training images), through `python -m
    jobs`, one at a time: first-epoch test accuracy, training loss and images/s, and whether
    it learns (train loss below ln 10, test accuracy three standard errors above chance).
    --points all runs every point of the file instead, its variants (repeat, grad_noise,
    stochastic_depth) included.
(c) --recipe-epochs N: the chosen points with the file's own schedule, unsqueezed (its 22
    epochs, the one-cycle warm-up over the first 21%, its 10% validation split), on --subset
    training images, stopped once N epochs' metrics lines are written: what a user watching
    the first epochs of a real sweep sees, epoch by epoch (train loss, validation accuracy).

Needs CIFAR-10 (cifar-10-batches-py) under $LAUNCH_DATA (default ~/.cache/launch/data); without
it prints "skipped" and exits 0.

    OMP_NUM_THREADS=1 .venv/bin/python bench/cifar_accuracy.py [--part a|b|both]
        [--epochs 2] [--workers 2] [--subset 10000] [--test 2000] [--models alexnet,...]
        [--points all|0,5] [--override KEY=JSON ...]
    OMP_NUM_THREADS=1 .venv/bin/python bench/cifar_accuracy.py --part c --recipe-epochs 5
        --points 1 [--subset 10000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs.data import FOLDER, TEST_FILES, TRAIN_FILES, data_root  # noqa: E402
from launcher.contract import METRICS_FILE, RESULT_FILE  # noqa: E402

FAMILIES = ("alexnet", "inception", "ensemble", "resnet9")


def tutorial_bare(root: Path, epochs: int, workers: int) -> dict:
    """Returns test accuracy and training images/s of the PyTorch tutorial's own code."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch.optim as optim
    import torchvision
    import torchvision.transforms as transforms

    class CIFAR10(torchvision.datasets.CIFAR10):
        # Our files come from the JPEGs (../shared/data): the same layout, other checksums.
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            import pickle

            with open(Path(self.root) / self.base_folder / "batches.meta", "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")["label_names"]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    batch_size = 4
    trainset = CIFAR10(root=str(root), train=True, download=False, transform=transform)
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=batch_size, shuffle=True,
                                              num_workers=workers)
    testset = CIFAR10(root=str(root), train=False, download=False, transform=transform)
    testloader = torch.utils.data.DataLoader(testset, batch_size=batch_size, shuffle=False,
                                             num_workers=workers)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = torch.flatten(x, 1)  # flatten all dimensions except batch
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x

    net = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    start = time.perf_counter()
    for epoch in range(epochs):  # loop over the dataset multiple times
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            inputs, labels = data
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if i % 2000 == 1999:  # print every 2000 mini-batches
                print(f"  bare [{epoch + 1}, {i + 1:5d}] loss: {running_loss / 2000:.3f}",
                      flush=True)
                running_loss = 0.0
    train_s = time.perf_counter() - start
    correct = total = 0
    with torch.no_grad():
        for images, labels in testloader:
            _, predicted = torch.max(net(images), 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    return {"test_accuracy": correct / total,
            "images_per_s": epochs * len(trainset) / train_s, "train_s": train_s}


def run_job(spec: dict, out: Path, env: dict) -> dict:
    """Returns the result and metrics of `python -m jobs` on spec, its log echoed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(spec))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "jobs", str(path), "--out", str(out)],
                          cwd=REPO, env=env, text=True, capture_output=True)
    wall_s = time.perf_counter() - start
    for line in proc.stdout.splitlines():
        if line.startswith(("progress:", "epoch ", "done:")):
            print("  job", line, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"job failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    metrics = [json.loads(ln) for ln in (out / METRICS_FILE).read_text().splitlines()]
    return {"result": json.loads((out / RESULT_FILE).read_text()), "metrics": metrics,
            "wall_s": wall_s}


def run_job_epochs(spec: dict, out: Path, env: dict, epochs: int) -> list[dict]:
    """Returns the first `epochs` metrics lines of `python -m jobs` on spec, then stops it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(spec))
    metrics = out / METRICS_FILE
    with open(out.parent / f"{out.name}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "jobs", str(path), "--out", str(out)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        lines: list[dict] = []
        try:
            running = True
            while running and len(lines) < epochs:
                running = proc.poll() is None  # one more read after it ended
                time.sleep(1 if running else 0)  # a bench, not a test: an epoch takes minutes
                text = metrics.read_text() if metrics.exists() else ""
                done = [json.loads(ln) for ln in text.splitlines() if ln.endswith("}")]
                for line in done[len(lines):]:
                    print(f"  epoch {line['epoch']}/{line['epochs']}: train_loss "
                          f"{line['train_loss']:.3f} train_acc {line['train_accuracy']:.3f} "
                          f"val_acc {line['val_accuracy']:.3f} lr {line.get('lr', 0):.5f} "
                          f"{line['images_per_s']:.0f} images/s", flush=True)
                lines = done
        finally:
            if len(lines) < spec["epochs"]:
                proc.terminate()  # the rest of the schedule is not what this measures
            proc.wait()  # or, run to its end, it tests and writes its result
    if len(lines) < epochs:
        raise SystemExit(f"job ended after {len(lines)} epochs: see {out.parent}/{out.name}.log")
    return lines[:epochs]


def job_env(workers: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), LAUNCH_NUM_WORKERS=str(workers))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", env["OMP_NUM_THREADS"])
    return env


def part_a(root: Path, args, tmp: Path) -> None:
    print(f"(a) the PyTorch tutorial's recipe: {args.epochs} epochs at batch 4, "
          f"{args.workers} workers, {os.environ.get('OMP_NUM_THREADS', 'all')} threads",
          flush=True)
    bare = tutorial_bare(root, args.epochs, args.workers)
    print(f"bare tutorial loop:  test accuracy {bare['test_accuracy']:.4f}  "
          f"{bare['images_per_s']:.0f} images/s ({bare['train_s']:.0f} s training)", flush=True)
    spec = {"model": "tutorial_cnn", "dataset": "cifar10", "data_root": str(root),
            "download": False, "device": "cpu", "epochs": args.epochs, "batch_size": 4,
            "val_size": 0, "optimizer": {"name": "sgd", "lr": 0.001, "momentum": 0.9,
                                         "nesterov": False, "weight_decay": 0.0}}
    ours = run_job(spec, tmp / "tutorial_cnn", job_env(args.workers))
    rate = sum(m["images_per_s"] for m in ours["metrics"]) / len(ours["metrics"])
    print(f"our tutorial_cnn:    test accuracy {ours['result']['test_accuracy']:.4f}  "
          f"{rate:.0f} images/s (job wall time {ours['wall_s']:.0f} s)")
    print(f"ratio ours/bare images/s = {rate / bare['images_per_s']:.3f}  (goal >= 0.95)",
          flush=True)


def cifar_yaml_points() -> tuple[dict, list[dict]]:
    """Returns configs/cifar.yaml's job and its list of points."""
    import yaml

    sweep = yaml.safe_load((REPO / "configs" / "cifar.yaml").read_text())
    return sweep["job"], sweep["points"]


def chosen_points(args) -> list[dict]:
    """Returns the points (b) runs: --points by index (or all), else each --models' plain one."""
    points = cifar_yaml_points()[1]
    if args.points == "all":
        return points
    if args.points:
        return [points[int(i)] for i in args.points.split(",")]
    return [next(p for p in points if p == {"model": m}) for m in args.models.split(",")]


def point_name(point: dict) -> str:
    """Returns a point as one short label: its model, then its variant keys."""
    extra = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}"
                     for k, v in point.items() if k != "model")
    return f"{point['model']} {extra}".strip()


def part_b(root: Path, args, tmp: Path) -> None:
    # epochs 1: the schedule (configs/cifar.yaml's one-cycle) runs its warm-up to the peak lr
    # and back down within this one epoch, so the epoch meets the recipe's peak rate.
    print(f"(b) configs/cifar.yaml's recipes, first epoch on {args.subset} training images, "
          f"{args.test} test images", flush=True)
    job = cifar_yaml_points()[0]
    for i, point in enumerate(chosen_points(args)):
        spec = {**job, **point, "data_root": str(root), "download": False,
                "device": "cpu", "epochs": 1, "val_size": 0,
                "max_train_samples": args.subset, "max_test_samples": args.test}
        for item in args.override:
            key, value = item.split("=", 1)
            spec[key] = json.loads(value)
        run = run_job(spec, tmp / f"point{i}", job_env(args.workers))
        line = run["metrics"][0]
        # Chance is 10%; three standard errors over it on n test images is clearly above.
        chance = 0.1 + 3 * math.sqrt(0.1 * 0.9 / min(args.test, 10000))
        learns = line["train_loss"] < math.log(10) and run["result"]["test_accuracy"] > chance
        print(f"{point_name(point)}: batch {spec['batch_size']} lr {spec['optimizer']['lr']}: "
              f"test accuracy {run['result']['test_accuracy']:.4f}  train_loss "
              f"{line['train_loss']:.3f}  train accuracy {line['train_accuracy']:.3f}  "
              f"{line['images_per_s']:.0f} images/s  ({run['wall_s']:.0f} s)  "
              f"{'learns' if learns else 'DOES NOT LEARN'} "
              f"(train loss < ln 10, test accuracy > {chance:.3f})", flush=True)


def part_c(root: Path, args, tmp: Path) -> None:
    job = cifar_yaml_points()[0]
    print(f"(c) configs/cifar.yaml's own schedule ({job['epochs']} epochs), its first "
          f"{args.recipe_epochs} on {args.subset} training images", flush=True)
    # The validation split is 10% of all 50,000 training images, whatever the subset.
    chance = 0.1 + 3 * math.sqrt(0.1 * 0.9 / (job.get("val_size", 0.1) * 50000))
    for i, point in enumerate(chosen_points(args)):
        point = dict(point)
        spec = {**job, **point, "data_root": str(root), "download": False,
                "device": "cpu", "max_train_samples": args.subset}
        for item in args.override:
            key, value = item.split("=", 1)
            spec[key] = point[key] = json.loads(value)  # the label says what ran
        print(f"{point_name(point)}:", flush=True)
        lines = run_job_epochs(spec, tmp / f"recipe{i}", job_env(args.workers),
                               args.recipe_epochs)
        learned = next((ln["epoch"] for ln in lines if ln["train_loss"] < math.log(10)
                        and ln["val_accuracy"] > chance), None)
        print(f"{point_name(point)}: " + (f"learns from epoch {learned}" if learned else
              f"DOES NOT LEARN in {args.recipe_epochs} epochs") +
              f" (train loss < ln 10, validation accuracy > {chance:.3f})", flush=True)
        result = tmp / f"recipe{i}" / RESULT_FILE
        if result.exists():
            test = json.loads(result.read_text())["test_accuracy"]
            print(f"{point_name(point)}: all {job['epochs']} epochs run: test accuracy "
                  f"{test:.4f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("a", "b", "c", "both"), default="both",
                        help="both: (a) and (b); (c) runs only when asked")
    parser.add_argument("--epochs", type=int, default=2, help="(a): the tutorial's 2")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, both sides")
    parser.add_argument("--subset", type=int, default=10000, help="(b): training images")
    parser.add_argument("--test", type=int, default=2000, help="(b): test images")
    parser.add_argument("--models", default=",".join(FAMILIES), help="(b): which families")
    parser.add_argument("--points", default="",
                        help="(b): configs/cifar.yaml's points by index (0,5) or all, variants "
                        "included; instead of --models")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                        help="(b): a spec key set for every family, e.g. batch_size=64")
    parser.add_argument("--recipe-epochs", type=int, default=5,
                        help="(c): epochs of the file's own schedule to run before stopping")
    args = parser.parse_args()
    root = data_root(None)
    missing = [name for name in TRAIN_FILES + TEST_FILES if not (root / FOLDER / name).exists()]
    if missing:
        print(f"skipped: CIFAR-10 is not under {root / FOLDER} (no {', '.join(missing)}); "
              "write it there with ../shared/data/make-cifar10.py, or set LAUNCH_DATA")
        return 0
    with tempfile.TemporaryDirectory(prefix="cifar-accuracy-") as tmp:
        if args.part in ("a", "both"):
            part_a(root, args, Path(tmp))
        if args.part in ("b", "both"):
            part_b(root, args, Path(tmp))
        if args.part == "c":
            part_c(root, args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
