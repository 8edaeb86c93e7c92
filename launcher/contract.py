"""What the launcher and a job agree on: how a job is started, what it is told, what it leaves.

Both sides import this module and nothing else of each other: `jobs/` (the training payload)
never imports the rest of the launcher, and the launcher never imports torch. A job is any
program the launcher starts: the built-in one (`python -m jobs SPEC --out JOB_DIR`) or a
user's command template. Pure standard library, so `launch status` pays nothing for it.

docs/design.md ("The job contract") is the same contract in prose.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

# -- files a job writes into its folder (JOB_DIR); the launcher reads them --------------------
RESULT_FILE = "result.json"  # {"status": "finished", ...}: the job is done, whoever watched it
METRICS_FILE = "metrics.jsonl"  # one JSON line per finished epoch (docs/design.md: Metrics)
CHECKPOINT_FILE = "checkpoint.pt"  # what a rerun in the same folder continues from
CHECKPOINT_PREVIOUS_FILE = "checkpoint.prev.pt"  # the one before: used when the last is torn
PROGRESS_FILE = "progress.json"  # where the epoch in progress stands, rewritten every few seconds
RESULT_FINISHED = "finished"  # the value of result.json's "status" that means done

# -- exit codes of a job ---------------------------------------------------------------------
EXIT_OK = 0
EXIT_CRASH = 1  # a bug: the traceback is in the job's log
EXIT_USER = 2  # a bad spec, missing data or a foreign checkpoint: one line says which
EXIT_REQUEUE = 75  # stopped by SIGTERM/SIGUSR2 after writing its checkpoint: run it again
EXIT_OOM = 76  # CUDA ran out of memory; its checkpoint is of its last finished step: run it again

# -- the environment a job is given ----------------------------------------------------------
ENV_SWEEP_ID = "LAUNCH_SWEEP_ID"
ENV_JOB_ID = "LAUNCH_JOB_ID"
ENV_JOB_DIR = "LAUNCH_JOB_DIR"  # the job's folder: write result.json and metrics.jsonl here
ENV_SEED = "LAUNCH_SEED"  # the job's seed (its spec's `seed`; 0 when it has none)
ENV_NUM_WORKERS = "LAUNCH_NUM_WORKERS"  # DataLoader workers within the job's CPU share
ENV_DATA = "LAUNCH_DATA"  # where data sets live (the built-in job's data_root default)
ENV_THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # intra-op threads within the share
ENV_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"  # GPU (or MIG) UUIDs; "" for a CPU job
ENV_DEVICE_ORDER = "CUDA_DEVICE_ORDER"
DEVICE_ORDER = "PCI_BUS_ID"  # so an index a job prints agrees with nvidia-smi and status
ENV_NUM_GPUS = "LAUNCH_NUM_GPUS"  # how many GPUs it holds (0 for a CPU job)
# A job of several GPUs: where its processes meet (torchrun, torch.distributed's env://).
ENV_MASTER_ADDR, ENV_MASTER_PORT = "MASTER_ADDR", "MASTER_PORT"
MASTER_ADDR = "127.0.0.1"  # one box: its processes meet on loopback
# torchrun reads its --master-addr/--master-port from these when not given on its command
# line (torch/distributed/argparse_util.py: PET_<dest>), so a plain `torchrun
# --nproc-per-node N train.py` meets on the leased port instead of its default 29500.
ENV_TORCHRUN_ADDR, ENV_TORCHRUN_PORT = "PET_MASTER_ADDR", "PET_MASTER_PORT"

# -- how a run that died of GPU out-of-memory reads in its last lines of output ---------------
# One list for every executor (launcher/local, launcher/slurm) and the built-in job: a command
# job that ends with one of these in its last lines ran out of GPU memory. Each is a message
# a framework prints (tests/launcher/test_memory.py holds a real one of each); host memory
# ("DefaultCPUAllocator", MemoryError, the kernel's OOM killer) is not on it: more GPU memory
# would not help those.
OOM_PATTERNS = (
    r"\b(?:CUDA|HIP|XPU) out of memory",  # PyTorch's caching allocator, every version
    r"\btorch\.(?:cuda\.)?OutOfMemoryError\b",  # its exception, however it was raised
    r"\bCUDA (?:error|failure)\b.{0,24}\bout of memory",  # runtime error 2, PyTorch, ONNX Runtime
    r"\bCuda failure (?:\d+ )?'out of memory'",  # NCCL
    r"\bcudaErrorMemoryAllocation\b",
    r"\bCUDA_ERROR_OUT_OF_MEMORY\b",  # the driver API: JAX, Numba, CuPy's driver calls
    r"\bCUBLAS_STATUS_ALLOC_FAILED\b",
    r"\bCUDNN_STATUS_ALLOC_FAILED\b",
    r"\bCUFFT_ALLOC_FAILED\b",
    r"\bCUSOLVER_STATUS_ALLOC_FAILED\b",
    r"\b(?:RESOURCE_EXHAUSTED|Resource exhausted): Out of memory",  # XLA: JAX, TensorFlow
    r"\bOOM when allocating tensor\b.*\bGPU",  # TensorFlow; its CPU allocations say CPU
    r"\bcupy\.cuda\.memory\.OutOfMemoryError\b",
)
_OOM_RE = None


def out_of_memory_line(text: str) -> str | None:
    """Return the first line of text that says the GPU ran out of memory, or None."""
    global _OOM_RE
    if _OOM_RE is None:
        import re

        _OOM_RE = re.compile("|".join(f"(?:{p})" for p in OOM_PATTERNS))
    for line in text.splitlines():
        if _OOM_RE.search(line):
            return line.strip()
    return None


def job_argv(spec: Mapping, spec_path: Path | None, job_dir: Path,
             python: str = sys.executable) -> list[str]:
    """Return the argv of a job: its own command template (resolved), or the built-in job."""
    if "command" in spec:
        return [str(a) for a in spec["command"]]
    return [python, "-m", "jobs", str(spec_path), "--out", str(job_dir)]


def job_seed(spec: Mapping) -> int:
    """Return a job's seed: its spec's `seed`, 0 for a job that sets none."""
    seed = spec.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def job_env(base: Mapping[str, str], *, sweep_id: str, job_id: str, job_dir: Path,
            num_workers: int, num_threads: int,
            gpus: Sequence[str] | None, seed: int,
            master_port: int | None = None) -> dict[str, str]:
    """Return the environment of a job: base plus what it was given.

    gpus lists the GPU or MIG UUIDs the job may use ([] for none, so CUDA sees no device);
    None leaves CUDA_VISIBLE_DEVICES as base has it (a Slurm allocation sets it).
    master_port, a port leased for the job alone (launcher/machine/ports.py), is where the
    processes of a job of several GPUs meet.
    """
    env = dict(base)
    env.update({ENV_SWEEP_ID: sweep_id, ENV_JOB_ID: job_id, ENV_JOB_DIR: str(job_dir),
                ENV_NUM_WORKERS: str(num_workers), ENV_DEVICE_ORDER: DEVICE_ORDER,
                ENV_SEED: str(seed)})
    env.update({name: str(num_threads) for name in ENV_THREADS})
    if gpus is not None:
        # UUIDs make the choice immune to CUDA's default FASTEST_FIRST renumbering.
        env[ENV_VISIBLE_DEVICES] = ",".join(gpus)
        env[ENV_NUM_GPUS] = str(len(gpus))
    if master_port is not None:
        env.update({ENV_MASTER_ADDR: MASTER_ADDR, ENV_MASTER_PORT: str(master_port),
                    ENV_TORCHRUN_ADDR: MASTER_ADDR, ENV_TORCHRUN_PORT: str(master_port)})
    return env


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], object],
                 durable: bool = False) -> None:
    """Replace path by data (bytes, or a function writing to the file) in one rename.

    A reader sees the old file or the new one, never half of one. durable fsyncs before the
    rename: checkpoints and results are worth an fsync, since a crash of the machine could
    otherwise leave an empty file under the final name; state files are rewritten a few
    times per job on the supervisor's dispatch path and an fsync there costs milliseconds
    each, while losing one only loses what status shows until the next write. The file is
    readable as the umask allows (0644 as a rule), so colleagues sharing a runs folder can
    read it.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except FileNotFoundError:  # a job's folder is made when it is first written to
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_stray_temps(folder: Path, names: Sequence[str]) -> list[Path]:
    """Remove the temp files a killed atomic_write of these names left in folder; return them."""
    gone = []
    for name in names:
        for path in Path(folder).glob(f".{name}.*"):
            try:
                path.unlink()
                gone.append(path)
            except OSError:
                pass
    return gone


def format_duration(seconds: float | None) -> str:
    """Return seconds as a job's log and `launch status` write them: 42s, 3m07s, 2h05m, 3d04h."""
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
