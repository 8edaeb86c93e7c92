"""Checkpoints written atomically, and the weights hash that identifies a trained model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from launcher.contract import CHECKPOINT_FILE as CHECKPOINT
from launcher.contract import atomic_write


def atomic_write_json(path: Path, obj) -> None:
    """Writes `obj` as indented JSON to `path`, atomically and durably."""
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode(), durable=True)


def save_checkpoint(out_dir: Path, state: dict) -> None:
    """Writes `state` to the checkpoint in out_dir atomically: a kill leaves the old or the new."""
    atomic_write(out_dir / CHECKPOINT, lambda f: torch.save(state, f), durable=True)


def load_checkpoint(out_dir: Path) -> dict | None:
    """Returns the checkpoint in out_dir, or None when there is none."""
    path = out_dir / CHECKPOINT
    if not path.exists():
        return None
    # The file is this job's own (numpy RNG state inside), so the full unpickler is fine.
    return torch.load(path, map_location="cpu", weights_only=False)


def weights_sha256(state_dict: dict) -> str:
    """Returns SHA-256 over the state_dict's tensors, in key order, as contiguous CPU bytes."""
    digest = hashlib.sha256()
    for tensor in state_dict.values():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
