"""Checkpoints written atomically, and the weights hash that identifies a trained model."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

CHECKPOINT = "checkpoint.pt"


def atomic_write_bytes(path: Path, write) -> None:
    """Calls write(file) on a temp file beside `path`, fsyncs, then renames it over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    """Writes `obj` as indented JSON to `path`, atomically."""
    data = (json.dumps(obj, indent=2) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def save_checkpoint(out_dir: Path, state: dict) -> None:
    """Writes `state` to out_dir/checkpoint.pt atomically: a kill leaves the old or the new one."""
    atomic_write_bytes(out_dir / CHECKPOINT, lambda f: torch.save(state, f))


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
