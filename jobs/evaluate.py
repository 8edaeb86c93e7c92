"""Evaluation over a loader: loss, accuracy, per-class accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_CLASSES = 10


@torch.no_grad()
def evaluate(job, loader) -> dict:
    """Returns {"loss", "accuracy", "per_class_accuracy"} of job.model on `loader` (None if empty).

    `job` needs .model, .normalize, .autocast, .device and .spec["batch_size"]; the model is
    left in eval mode (repetition at its fixed k, stochastic depth scaled).
    """
    n = len(loader)
    if n == 0:
        return {"loss": None, "accuracy": None, "per_class_accuracy": [None] * NUM_CLASSES}
    job.model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=job.device)
    hits = torch.zeros(NUM_CLASSES, dtype=torch.int64, device=job.device)
    counts = torch.zeros(NUM_CLASSES, dtype=torch.int64, device=job.device)
    for x, y in loader.batches(torch.arange(n), None, job.spec["batch_size"], drop_last=False):
        with job.autocast():
            out = job.model(job.normalize(x))
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum").double()
        hits += torch.bincount(y[out.argmax(1) == y], minlength=NUM_CLASSES)
        counts += torch.bincount(y, minlength=NUM_CLASSES)
    hits_list, counts_list = hits.tolist(), counts.tolist()
    return {
        "loss": loss_sum.item() / n,
        "accuracy": sum(hits_list) / n,
        "per_class_accuracy": [h / c if c else None
                               for h, c in zip(hits_list, counts_list, strict=True)],
    }
