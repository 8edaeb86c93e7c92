"""How users name a GPU in their files (include_gpus, exclude_gpus, the house rules'
reserved_gpus): by index, by MIG label ("0:1": device 1 of GPU 0), or by a UUID prefix of
at least 8 characters.

A module of its own, with nothing to import, so that `launch status` can mark the GPUs the
house rules reserve without loading the GPU policy (gpus.py).
"""

from __future__ import annotations

from collections.abc import Sequence

UUID_PREFIX_MIN = 8  # shorter prefixes would name GPUs by accident


def named(label: str, gpu_index: int, uuid: str | None, names: Sequence[str]) -> bool:
    """Return whether the GPU or MIG device (its label, GPU index, UUID) is among names."""
    for name in names:
        name = str(name)
        if name in (label, str(gpu_index)):
            return True
        if uuid and len(name) >= UUID_PREFIX_MIN and uuid.startswith(name):
            return True
    return False
