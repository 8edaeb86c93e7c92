"""The optional TensorBoard writer: scalar events in the job's folder, beside its metrics.

`tensorboard: true` in a spec; jobs/spec.py refuses it at validation time when the
package is missing, so a sweep never learns that mid-run. Events land in the job's own
folder, so `tensorboard --logdir runs/SWEEP` shows each job as one run.
"""

from __future__ import annotations

from pathlib import Path

METRIC_TAGS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s")


class Board:
    """Writes scalars to TensorBoard event files in one folder; `add` is the whole interface."""

    def __init__(self, out_dir: Path, resume_step: int | None):
        # torch's writer is imported only here: it pulls in tensorboard and protobuf.
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run logged past the checkpoint it resumes from.
        self.writer = SummaryWriter(log_dir=str(out_dir), purge_step=resume_step or None)

    def add(self, tag: str, value: float | None, step: int) -> None:
        """Adds one scalar at step (optimizer steps so far); None is skipped."""
        if value is not None:
            self.writer.add_scalar(tag, value, step)

    def add_epoch(self, line: dict, step: int) -> None:
        """Adds a metrics line's numbers as epoch/<key> scalars and flushes them."""
        for key in METRIC_TAGS:
            self.add(f"epoch/{key}", line.get(key), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_board(spec: dict, out_dir: Path, resume_step: int) -> Board | None:
    """Returns a Board writing into out_dir when the spec asks for TensorBoard, else None."""
    return Board(out_dir, resume_step) if spec["tensorboard"] else None
