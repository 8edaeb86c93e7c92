"""Where a job runs: device choice, thread and worker counts, and the record of it all."""

from __future__ import annotations

import os
import socket

import torch

from jobs.spec import SpecError
from launcher.contract import ENV_NUM_WORKERS, ENV_THREADS, ENV_VISIBLE_DEVICES


def pick_device(requested: str) -> torch.device:
    """Returns the torch device for spec `device`; SpecError if cuda is asked for but absent."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        raise SpecError("device", "cuda requested but torch sees no CUDA device "
                        f"({ENV_VISIBLE_DEVICES}={os.environ.get(ENV_VISIBLE_DEVICES)!r}); "
                        "allowed: auto|cpu|cuda")
    return torch.device("cpu")


def configure_threads() -> int:
    """Returns torch's intra-op thread count, set from OMP_NUM_THREADS when that is set."""
    value = os.environ.get(ENV_THREADS[0], "")
    if value.isdigit() and int(value) > 0:
        torch.set_num_threads(int(value))
    return torch.get_num_threads()


def resolve_num_workers(spec: dict) -> int:
    """Returns DataLoader workers: $LAUNCH_NUM_WORKERS when a launcher set it (it has folded
    the spec's wish into the job's CPU share), else the spec's, else 0 (0 for device)."""
    if spec["loader"] == "device":
        return 0
    value = os.environ.get(ENV_NUM_WORKERS, "")
    if value:
        if not value.isdigit():
            raise SpecError("num_workers", f"${ENV_NUM_WORKERS} must be an integer >= 0, "
                            f"got {value!r}")
        return int(value)
    return 0 if spec["num_workers"] is None else spec["num_workers"]


def device_record(device: torch.device) -> tuple[str, str | None]:
    """Returns (device description, GPU UUID or None)."""
    if device.type != "cuda":
        return "cpu", None
    props = torch.cuda.get_device_properties(device)
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid and not uuid.startswith(("GPU-", "MIG-")):  # torch prints the bare hex form
        uuid = "GPU-" + uuid
    return f"cuda:{torch.cuda.current_device()} ({props.name})", uuid or None


def env_record(num_threads: int, num_workers: int) -> dict:
    """Returns the software and placement facts the result records under "env"."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        ENV_VISIBLE_DEVICES: os.environ.get(ENV_VISIBLE_DEVICES),
        "num_threads": num_threads,
        "num_workers": num_workers,
        "hostname": socket.gethostname(),
    }
