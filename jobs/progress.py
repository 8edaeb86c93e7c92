"""Progress within an epoch: when a line is due, what it says, and where it goes.

Every `progress_every_s` seconds of training the job logs one line and rewrites
PROGRESS_FILE in its folder (the launcher shows it in `launch status` and the follower).
Checking whether a line is due is one clock read per batch; the device-side sums (the
training loss) are read only when a line is due, so a CUDA job is not synchronised per
batch (docs/design.md: the job contract).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from launcher.contract import PROGRESS_FILE, atomic_write, format_duration


class EpochProgress:
    """Reports one epoch's progress: `due()` per batch, `report(...)` when it says so."""

    def __init__(self, every_s: float, out_dir: Path, *, epoch: int, epochs: int,
                 batches: int, batch: int, seen: int, log: Callable[[str], None],
                 elapsed_s: Callable[[], float], scalars: Callable[[str, float, int], None]
                 | None = None, clock: Callable[[], float] = time.perf_counter):
        self.every_s, self.path, self.log = every_s, Path(out_dir) / PROGRESS_FILE, log
        self.epoch, self.epochs, self.batches = epoch, epochs, batches
        self.elapsed_s, self.scalars, self.clock = elapsed_s, scalars, clock
        # The rate counts this run's batches only: a resumed epoch's earlier ones took no time.
        self.start_batch, self.start_seen, self.start_s = batch, seen, clock()
        self.next_s = self.start_s + every_s if every_s > 0 else float("inf")

    def due(self) -> bool:
        """Returns whether a line is due now (never when progress_every_s is 0)."""
        return self.clock() >= self.next_s

    def report(self, batch: int, seen: int, loss_sum, step: int) -> dict:
        """Returns the progress record after logging it and writing PROGRESS_FILE.

        loss_sum is the epoch's summed training loss (a tensor on the device, or a float);
        seen the samples it sums over.
        """
        now = self.clock()
        self.next_s = now + self.every_s
        loss = float(loss_sum) / max(seen, 1)  # the one device read per line
        rate_s = (batch - self.start_batch) / max(now - self.start_s, 1e-9)  # batches per s
        images_per_s = (seen - self.start_seen) / max(now - self.start_s, 1e-9)
        left_in_epoch = self.batches - batch
        left = left_in_epoch + (self.epochs - self.epoch) * self.batches
        record = {
            "epoch": self.epoch, "epochs": self.epochs, "batch": batch,
            "batches": self.batches, "train_loss": loss, "images_per_s": images_per_s,
            "epoch_eta_s": left_in_epoch / rate_s if rate_s else None,
            "eta_s": left / rate_s if rate_s else None,
            "elapsed_s": self.elapsed_s(), "time": time.time(),
        }
        atomic_write(self.path, (json.dumps(record) + "\n").encode())
        self.log(progress_line(record))
        if self.scalars is not None:
            self.scalars("train/loss_running", loss, step)
            self.scalars("train/images_per_s", images_per_s, step)
        return record


def progress_line(record: dict) -> str:
    """Returns the log line of a progress record:
    "progress: epoch 1/2 batch 5123/12500 (41%) train_loss 1.9300 312 img/s eta epoch 1m20s,
    job 4m10s"."""
    done = record["batch"] / record["batches"]
    return (f"progress: epoch {record['epoch']}/{record['epochs']} batch {record['batch']}/"
            f"{record['batches']} ({int(100 * done)}%) train_loss {record['train_loss']:.4f} "
            f"{record['images_per_s']:.0f} img/s eta epoch "
            f"{format_duration(record['epoch_eta_s'])}, job {format_duration(record['eta_s'])}")
