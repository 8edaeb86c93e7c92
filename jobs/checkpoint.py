"""Checkpoints written atomically, the one before kept, and the weights hash of a model.

Each save keeps the checkpoint it replaces as the previous one: a checkpoint torn by a full
disk, a crash of the machine or a careless hand then costs an epoch, not the job.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from launcher.contract import CHECKPOINT_FILE as CHECKPOINT
from launcher.contract import CHECKPOINT_PREVIOUS_FILE as PREVIOUS
from launcher.contract import atomic_write


class CheckpointError(Exception):
    """The job's checkpoints cannot be read: it cannot continue, and must begin again."""


def atomic_write_json(path: Path, obj) -> None:
    """Writes `obj` as indented JSON to `path`, atomically and durably."""
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode(), durable=True)


def save_checkpoint(out_dir: Path, state: dict) -> None:
    """Writes `state` as the checkpoint in out_dir, the one it replaces kept as the previous.

    A kill at any moment leaves a readable checkpoint: the new, the old, or (between the two
    renames) the previous one alone, which load_checkpoint falls back to.
    """
    path = out_dir / CHECKPOINT
    if path.exists():
        os.replace(path, out_dir / PREVIOUS)
    atomic_write(path, lambda f: torch.save(state, f), durable=True)


def _load(path: Path) -> dict:
    # The file is this job's own (numpy RNG state inside), so the full unpickler is fine.
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError("not a checkpoint of this job")
    return state


def load_checkpoint(out_dir: Path, log=print) -> dict | None:
    """Returns the checkpoint in out_dir (or the previous one, saying so), None if there is
    none; raises CheckpointError when what is there cannot be read."""
    path, previous = out_dir / CHECKPOINT, out_dir / PREVIOUS
    if not path.exists() and not previous.exists():
        return None
    why = "it is missing"
    if path.exists():
        try:
            return _load(path)
        except Exception as exc:  # torch raises many kinds for a torn file
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    if previous.exists():
        try:
            state = _load(previous)
        except Exception:
            pass
        else:
            log(f"checkpoint: {path} is unreadable ({why}); continuing from the previous one "
                f"(epoch {state.get('epoch')} batch {state.get('batch')})")
            return state
    raise CheckpointError(
        f"{path} is unreadable ({why}) and there is no readable previous checkpoint: begin "
        "the job again with `launch sweep --resume SWEEP --restart JOB` (or delete the file)")


def weights_sha256(state_dict: dict) -> str:
    """Returns SHA-256 over the state_dict's tensors, in key order, as contiguous CPU bytes."""
    digest = hashlib.sha256()
    for tensor in state_dict.values():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
