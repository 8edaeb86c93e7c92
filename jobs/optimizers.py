"""The optimizer and learning-rate schedule a spec asks for."""

from __future__ import annotations

import torch
from torch import optim


def make_optimizer(cfg: dict, params) -> optim.Optimizer:
    """Returns SGD (the PRNG lecture's: momentum, Nesterov, weight decay) or Adam, per the spec."""
    if cfg["name"] == "adam":
        return optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]),
                          weight_decay=cfg["weight_decay"])
    return optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                     nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"])


def make_scheduler(cfg: dict, optimizer: optim.Optimizer, epochs: int,
                   batches_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Returns the spec.lr_schedule scheduler, stepped once per batch, or None for 'none'."""
    total = epochs * batches_per_epoch
    name = cfg["name"]
    if name == "cosine":
        return optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=cfg["min_lr"])
    if name == "step":
        return optim.lr_scheduler.StepLR(
            optimizer, step_size=cfg["step_epochs"] * batches_per_epoch, gamma=cfg["gamma"])
    if name == "onecycle":
        peak = optimizer.param_groups[0]["lr"]
        return optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total,
                                             pct_start=cfg["pct_start"])
    return None
