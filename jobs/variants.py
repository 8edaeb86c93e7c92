"""Training variants: random layer repetition, stochastic depth, gradient noise.

Each random draw comes from a generator the caller owns (derived from the job
seed and saved in every checkpoint), never from a global RNG.  Repetition counts
and block survival are scalars drawn on a CPU generator, which costs no device
synchronisation; gradient noise is drawn on the job's device.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from jobs.models import Ensemble, Residual


class Repeated(nn.Module):
    """Applies `layer` k times (the group-GPU tutorial): k uniform on [k_min, k_max] per training
    forward pass, a fixed `k_eval` in eval mode."""

    def __init__(self, layer: nn.Module, k_min: int, k_max: int, k_eval: int,
                 rng: torch.Generator):
        super().__init__()
        self.layer = layer
        self.k_min, self.k_max, self.k_eval = k_min, k_max, k_eval
        self.rng = rng

    def forward(self, x):
        k = self.k_eval
        if self.training:
            k = self.k_min + int(torch.randint(self.k_max - self.k_min + 1, (),
                                               generator=self.rng))
        for _ in range(k):
            x = self.layer(x)
        return x


class StochasticDepth(nn.Module):
    """A residual block that survives with probability p per training batch (Huang et al. 2016);
    at test time x + p * f(x), the expectation of the training-time block."""

    def __init__(self, module: nn.Module, survival: float, rng: torch.Generator):
        super().__init__()
        self.module = module  # same attribute as Residual: state_dict keys do not change
        self.survival = survival
        self.rng = rng

    def forward(self, x):
        if not self.training:
            return x + self.survival * self.module(x)
        if float(torch.rand((), generator=self.rng)) < self.survival:
            return x + self.module(x)
        return x


def eval_repeats(cfg: dict) -> int:
    """Returns the k used at evaluation: 'expected' = floor((min+max+1)/2), 'max' = max."""
    if cfg["eval"] == "max":
        return cfg["max"]
    return (cfg["min"] + cfg["max"] + 1) // 2


def apply_repeat(model: nn.Module, cfg: dict, rng: torch.Generator) -> None:
    """Replaces the module at cfg['layer'] (a dotted path) by a Repeated wrapper of it."""
    parent_path, _, name = cfg["layer"].rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    layer = getattr(parent, name)
    setattr(parent, name, Repeated(layer, cfg["min"], cfg["max"], eval_repeats(cfg), rng))


def survival_probabilities(num_blocks: int, p_last: float) -> list[float]:
    """Returns Huang et al.'s linear decay: block l of L survives with 1 - l/L * (1 - p_L)."""
    return [1 - (i / num_blocks) * (1 - p_last) for i in range(1, num_blocks + 1)]


def apply_stochastic_depth(model: nn.Module, p_last: float, rng: torch.Generator) -> int:
    """Wraps every Residual block for stochastic depth, decaying along each network on its own
    (an ensemble's members are separate networks); returns how many blocks it wrapped."""
    networks = list(model.members) if isinstance(model, Ensemble) else [model]
    wrapped = 0
    for net in networks:
        blocks = [(name, m) for name, m in net.named_modules() if isinstance(m, Residual)]
        probabilities = survival_probabilities(len(blocks), p_last)
        for (name, block), p in zip(blocks, probabilities, strict=True):
            parent_path, _, attr = name.rpartition(".")
            parent = net.get_submodule(parent_path) if parent_path else net
            setattr(parent, attr, StochasticDepth(block.module, p, rng))
        wrapped += len(blocks)
    return wrapped


@torch.no_grad()
def add_grad_noise(params: list[torch.Tensor], step: int, cfg: dict,
                   rng: torch.Generator) -> None:
    """Adds Gaussian noise to every gradient in place.

    annealed (Neelakantan et al. 2015): variance eta / (1 + step)^gamma, the same for all.
    relative: per tensor, std alpha * ||g|| / sqrt(numel), i.e. alpha times the RMS gradient.
    """
    relative = cfg["mode"] == "relative"
    std = 0.0 if relative else math.sqrt(cfg["eta"] / (1 + step) ** cfg["gamma"])
    for p in params:
        g = p.grad
        if g is None:
            continue
        noise = torch.randn(g.shape, generator=rng, device=g.device, dtype=g.dtype)
        if relative:
            noise.mul_(g.norm() * (cfg["alpha"] / math.sqrt(g.numel())))
        else:
            noise.mul_(std)
        g.add_(noise)
