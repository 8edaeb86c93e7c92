"""Data sets as uint8 arrays: CIFAR-10 from its on-disk layout, a synthetic twin, the val split.

Everything here returns `Arrays`: images (N, 3, 32, 32) uint8 and labels (N,) int64,
kept as bytes so both loaders can ship or hold them cheaply and normalise on the
device.  CIFAR-10 is fetched through torchvision when missing, under a file lock,
into a temporary folder that is renamed into place: ten jobs starting together
download once, and no job ever reads a half-written file.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from launcher.contract import ENV_DATA

# The PRNG lecture's normalisation, computed beforehand on the CIFAR-10 training set.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"


class DataError(Exception):
    """Data a job cannot get: the message names the path and how to fix it."""


@dataclass(frozen=True)
class Arrays:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def take(self, indices: np.ndarray) -> Arrays:
        """Returns the subset at `indices`, in that order."""
        return Arrays(self.images[indices], self.labels[indices])

    def __len__(self) -> int:
        return len(self.labels)


def data_root(configured: str | None) -> Path:
    """Returns the data root: the spec's data_root, else $LAUNCH_DATA, else ~/.cache/launch/data."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(ENV_DATA):
        return Path(os.environ[ENV_DATA]).expanduser()
    return Path.home() / ".cache" / "launch" / "data"


def read_cifar_file(path: Path) -> Arrays:
    """Returns one CIFAR-10 python batch file; raises DataError if it is missing or corrupt."""
    try:
        with open(path, "rb") as f:
            # The files were pickled by Python 2: its str keys come back as str with latin1.
            entry = pickle.load(f, encoding="latin1")
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        images = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry["labels"], dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except Exception as exc:  # a truncated pickle raises any of half a dozen types
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if images.ndim != 2 or images.shape[1] != 3072 or len(images) != len(labels):
        raise DataError(f"{path}: expected data (N, 3072) and N labels, got data "
                        f"{images.shape} and {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside 0..9")
    return Arrays(images.reshape(-1, 3, 32, 32), labels)


def read_cifar10(folder: Path) -> tuple[Arrays, Arrays]:
    """Returns (train, test) read from a `cifar-10-batches-py` folder; DataError if incomplete."""
    train = [read_cifar_file(folder / name) for name in TRAIN_FILES]
    test = read_cifar_file(folder / TEST_FILES[0])
    return (Arrays(np.concatenate([a.images for a in train]),
                   np.concatenate([a.labels for a in train])), test)


def load_cifar10(root: Path, download: bool, log=print) -> tuple[Arrays, Arrays]:
    """Returns (train, test) from root/cifar-10-batches-py, downloading once under a lock."""
    folder = root / FOLDER
    try:
        return read_cifar10(folder)
    except DataError as first:
        if not download:
            raise DataError(_fix_text(folder, str(first), "download is off")) from None
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / ".cifar-10.lock", "a")
    except OSError as exc:  # a read-only shared data root, say
        raise DataError(_fix_text(folder, f"cannot download into {root} ({exc.strerror})",
                                  "data root not writable")) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        try:
            return read_cifar10(folder)  # another job may have fetched it while we waited
        except DataError as problem:
            log(f"data: {problem}; downloading CIFAR-10 into {root}")
            _download_into(root, folder)
    return read_cifar10(folder)


def _download_into(root: Path, folder: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".cifar-download-", dir=root))
    try:
        _fetch_archive(tmp)
        read_cifar10(tmp / FOLDER)  # never publish a folder we cannot read
        if folder.exists():
            folder.rename(root / f"{FOLDER}.bad-{int(time.time())}")
        (tmp / FOLDER).rename(folder)  # atomic: readers see the old state or the whole new one
    except Exception as exc:
        raise DataError(_fix_text(folder, f"download failed ({type(exc).__name__}: {exc})",
                                  "no network?")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch_archive(into: Path) -> None:
    # torchvision checks the archive's MD5; imported here because it is slow to import.
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(URL, download_root=str(into), md5=TGZ_MD5, remove_finished=True)


def _fix_text(folder: Path, problem: str, why: str) -> str:
    return (f"CIFAR-10 not usable at {folder}: {problem} ({why}). Fix: on a machine with "
            f"network run once with download: true, or fetch {URL} and unpack it into "
            f"{folder.parent} (it holds {FOLDER}/), or set data_root / $LAUNCH_DATA to a "
            f"folder that holds {FOLDER}/")


def make_synthetic(train_size: int, test_size: int, noise: float, seed: int,
                   mix: float = 0.6, shift: int = 4) -> tuple[Arrays, Arrays]:
    """Returns a CIFAR-shaped (train, test) that a model learns but never gets all right.

    Each class is a smooth random colour pattern (8x8 upsampled). A sample is its class's
    pattern shifted by up to `shift` pixels each way, blended with another class's pattern
    (shifted on its own) at a weight drawn uniformly from [0, mix), plus per-pixel Gaussian
    noise `noise` times the patterns' spread. Where the weight passes 0.5 the other class
    dominates, so with mix 0.6 about a sixth of the samples are all but undecidable: the
    demo's small networks land near 70-80% (configs/demo.yaml), apart enough for a sweep to
    tell them apart. mix 0 and shift 2 give the easy data set every network learns at once.
    """
    streams = np.random.SeedSequence(seed).spawn(3)
    coarse = np.random.default_rng(streams[0]).normal(size=(10, 3, 8, 8))
    patterns = coarse.repeat(4, axis=2).repeat(4, axis=3)
    patterns = (patterns + np.roll(patterns, 2, 2) + np.roll(patterns, 2, 3)) / 3  # soften edges
    patterns /= patterns.std()
    draw = {"noise": noise, "mix": mix, "shift": shift}
    return (_draw(patterns, train_size, np.random.default_rng(streams[1]), **draw),
            _draw(patterns, test_size, np.random.default_rng(streams[2]), **draw))


def _draw(patterns: np.ndarray, n: int, rng: np.random.Generator, *, noise: float,
          mix: float, shift: int) -> Arrays:
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)  # balanced classes
    others = (labels + rng.integers(1, 10, size=n)) % 10  # any class but the sample's own
    weights = rng.uniform(0, mix, size=n)
    shifts = rng.integers(-shift, shift + 1, size=(n, 4))
    images = np.empty((n, 3, 32, 32), dtype=np.uint8)
    for start in range(0, n, 1024):  # chunks bound the float64 scratch memory
        stop = min(n, start + 1024)
        x = np.empty((stop - start, 3, 32, 32))
        for i, k in enumerate(range(start, stop)):
            own = np.roll(patterns[labels[k]], tuple(shifts[k, :2]), axis=(1, 2))
            other = np.roll(patterns[others[k]], tuple(shifts[k, 2:]), axis=(1, 2))
            x[i] = (1 - weights[k]) * own + weights[k] * other
        x += noise * rng.normal(size=x.shape)
        images[start:stop] = np.clip(128 + 40 * x, 0, 255).astype(np.uint8)
    return Arrays(images, labels)


def split_train_val(n: int, val_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (train indices, val indices): the PRNG lecture's seeded random_split."""
    if val_size == 0:
        return np.arange(n), np.arange(0)
    gen = torch.Generator()
    gen.manual_seed(seed)
    train, val = torch.utils.data.random_split(range(n), [1 - val_size, val_size],
                                               generator=gen)
    return np.asarray(train.indices, dtype=np.int64), np.asarray(val.indices, dtype=np.int64)


def load_splits(spec: dict, split_seed: int, log=print) -> dict[str, Arrays]:
    """Returns {"train", "val", "test"} Arrays for the spec, caps applied."""
    if spec["dataset"] == "synthetic":
        syn = spec["synthetic"]
        full, test = make_synthetic(syn["train_size"], syn["test_size"], syn["noise"],
                                    syn["seed"], syn["mix"], syn["shift"])
    else:
        full, test = load_cifar10(data_root(spec["data_root"]), spec["download"], log)
    train_idx, val_idx = split_train_val(len(full), spec["val_size"], split_seed)
    # Caps take a prefix: the split is already a random order, so a prefix is a random subset.
    train_idx = train_idx[:spec["max_train_samples"]]
    val_idx = val_idx[:spec["max_val_samples"]]
    test = test.take(np.arange(len(test))[:spec["max_test_samples"]])
    return {"train": full.take(train_idx), "val": full.take(val_idx), "test": test}
