"""Seeding: the global RNGs, the job's derived generators, and their saved states.

Recipes from the PRNG lecture and the UvA tutorial notes: seed Python, NumPy and torch
(CPU and every GPU) from one number, and give each kind of random draw its own generator
so that changing one (say, turning augmentation on) does not shift the others.  The
derived seeds come from NumPy's SeedSequence, keyed by a fixed index per name,
so adding a name later never changes an existing one.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

# name -> spawn index; never renumber (that would change every old run's draws).
STREAMS = {
    "init": 0,        # model weights
    "data_order": 1,  # per-epoch shuffle (and DataLoader worker seeds)
    "augment": 2,     # per-epoch crop offsets and flips
    "noise": 3,       # gradient noise
    "repeat": 4,      # random layer repetition counts
    "depth": 5,       # stochastic-depth block survival
    "split": 6,       # train/validation split
}

# Generators that advance during training and so go into every checkpoint.
STATEFUL = ("noise", "repeat", "depth")


def derive_seed(seed: int, *key: int) -> int:
    """Returns a 63-bit seed from SeedSequence(seed) spawned along `key` (e.g. stream, epoch)."""
    words = np.random.SeedSequence(seed, spawn_key=key).generate_state(2, np.uint32)
    return int((int(words[0]) << 32 | int(words[1])) & (2**63 - 1))


def derived_seeds(seed: int) -> dict[str, int]:
    """Returns the seed of every named stream of the job, for the record and the generators."""
    return {name: derive_seed(seed, index) for name, index in STREAMS.items()}


def epoch_seed(stream_seed: int, epoch: int) -> int:
    """Returns the seed for one epoch of a stream: keyed by epoch, so resume needs no state."""
    return derive_seed(stream_seed, epoch)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Returns a torch.Generator on `device` seeded with `seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def seed_everything(seed: int, reproducible: bool) -> None:
    """Seeds Python, NumPy and torch (CPU + all GPUs); `reproducible` pins deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32 - 1))
    torch.manual_seed(seed)  # also seeds every CUDA device, lazily
    if reproducible:
        # cuBLAS reads this when its handle is created, so set it before any CUDA work.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
        torch.use_deterministic_algorithms(False)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: seeds the worker's globals and leaves signals to the parent."""
    import signal

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    # A group-wide SIGTERM must not kill workers mid-batch: the parent checkpoints and stops them.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def global_rng_state() -> dict:
    """Returns the state of Python's, NumPy's and torch's global RNGs (CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    """Restores what global_rng_state() returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
