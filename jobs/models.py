"""The networks of the PRNG lecture and the group-GPU PyTorch tutorial, every weight drawn from
the job's own generator.

torch's built-in initialisers draw from the global RNG; the PRNG lecture re-implements
`kaiming_uniform_` with a `generator` argument, and we extend that to every
layer type used here, keeping each source's scheme: torch's default
(kaiming_uniform_ a=sqrt(5), bias uniform +-1/sqrt(fan_in)) for the
tutorial's networks and the small Inception, the lecture's relu/linear gains for ResNet9.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn.init import _calculate_correct_fan, calculate_gain

from jobs.inception import SmallInception


def kaiming_uniform_(tensor: torch.Tensor, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Returns `tensor` filled as torch.nn.init.kaiming_uniform_, drawing from `generator`."""
    fan = _calculate_correct_fan(tensor, mode)
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


def init_torch_default(model: nn.Module, rng: torch.Generator) -> None:
    """Re-draws every Conv2d/Linear as torch's reset_parameters would, from `rng`."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            kaiming_uniform_(m.weight, a=math.sqrt(5), generator=rng)
            if m.bias is not None:
                bound = 1 / math.sqrt(_calculate_correct_fan(m.weight, "fan_in"))
                with torch.no_grad():
                    m.bias.uniform_(-bound, bound, generator=rng)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # ones and zeros: nothing random


class TutorialCNN(nn.Module):
    """The PyTorch tutorial CNN as the group-GPU tutorial gives it: C-ReLU-MP, C-ReLU-MP,
    FC-FC-FC; its fc2 is square so it can repeat."""

    def __init__(self, num_class: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 120)
        self.fc3 = nn.Linear(120, num_class)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = x.flatten(1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class AlexBlock(nn.Module):
    """The group-GPU tutorial's AlexBlock(in, out, k): conv k x k, ReLU, 2x2 max-pool."""

    def __init__(self, in_ch: int, out_ch: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, k)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x):
        return self.pool(self.relu(self.conv(x)))


class AlexNet(nn.Module):
    """The group-GPU tutorial's bigger AlexNet: two AlexBlocks, fc 6400-384-192-10 (its 383
    typo fixed)."""

    def __init__(self, num_class: int = 10):
        super().__init__()
        self.block1 = AlexBlock(3, 96, 5)
        self.block2 = AlexBlock(96, 256, 5)
        self.fc1 = nn.Linear(256 * 5 * 5, 384)
        self.fc2 = nn.Linear(384, 192)
        self.fc3 = nn.Linear(192, num_class)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.block2(self.block1(x)).flatten(1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def conv_bn(channels_in: int, channels_out: int, kernel_size: int = 3) -> nn.Sequential:
    """Returns the lecture's conv (no bias, 'same' padding), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel_size, padding="same", bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """The PRNG lecture's residual connection: x + module(x)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return x + self.module(x)


class GlobalAvgPool(nn.Module):
    """Mean over H and W, flattened: AdaptiveAvgPool2d((1, 1)) + Flatten, minus its CUDA
    backward, which has no deterministic implementation (use_deterministic_algorithms raises)."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


class Scale(nn.Module):
    """Multiplies by a constant (the Myrtle network's 0.125 on the logits)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def _res(width: int) -> Residual:
    return Residual(nn.Sequential(conv_bn(width, width), conv_bn(width, width)))


class ResNet9(nn.Module):
    """The PRNG lecture's ResNet9 (widths 64-128-256-256), or Page's (Myrtle's DAWNBench) layout
    (64-128-256-512).

    Residual blocks are `res1` and `res2` (stochastic depth and repetition name them).
    """

    def __init__(self, widths: str = "standard", num_class: int = 10):
        super().__init__()
        if widths == "standard":
            self.prep = nn.Sequential(conv_bn(3, 64), nn.MaxPool2d(2))
            self.layer1 = nn.Sequential(conv_bn(64, 128), nn.MaxPool2d(2))
            self.res1 = _res(128)
            self.layer2 = nn.Sequential(conv_bn(128, 256), nn.MaxPool2d(2),
                                        conv_bn(256, 256), nn.MaxPool2d(2))
            self.res2 = _res(256)
            self.head = nn.Sequential(GlobalAvgPool(), nn.Linear(256, num_class, bias=False))
        else:
            self.prep = conv_bn(3, 64)
            self.layer1 = nn.Sequential(conv_bn(64, 128), nn.MaxPool2d(2))
            self.res1 = _res(128)
            self.layer2 = nn.Sequential(conv_bn(128, 256), nn.MaxPool2d(2),
                                        conv_bn(256, 512), nn.MaxPool2d(2))
            self.res2 = _res(512)
            self.head = nn.Sequential(nn.MaxPool2d(4), nn.Flatten(),
                                      nn.Linear(512, num_class, bias=False), Scale(0.125))

    def reset_parameters(self, rng: torch.Generator) -> None:
        """The PRNG lecture's scheme: kaiming uniform convs (relu gain), linear gain for the
        classifier."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_uniform_(m.weight, nonlinearity="relu", generator=rng)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                kaiming_uniform_(m.weight, nonlinearity="linear", generator=rng)

    def forward(self, x):
        return self.head(self.res2(self.layer2(self.res1(self.layer1(self.prep(x))))))


class Ensemble(nn.Module):
    """The group-GPU tutorial's ensemble: every member sees the input, their logits are summed."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        out = self.members[0](x)
        for member in self.members[1:]:
            out = out + member(x)
        return out


def build_model(spec: dict, rng: torch.Generator) -> nn.Module:
    """Returns the spec's model on the CPU, every weight drawn from `rng` in module order."""
    if spec["model"] == "ensemble":
        return Ensemble([_build_one(name, spec, rng) for name in spec["members"]])
    return _build_one(spec["model"], spec, rng)


def _build_one(name: str, spec: dict, rng: torch.Generator) -> nn.Module:
    if name == "resnet9":
        model = ResNet9(spec["resnet9_widths"])
        model.reset_parameters(rng)
        return model
    model = {"tutorial_cnn": TutorialCNN, "alexnet": AlexNet, "inception": SmallInception}[name]()
    init_torch_default(model, rng)
    return model


def count_parameters(model: nn.Module, batchnorm_affine: bool = True) -> int:
    """Returns the number of parameters, optionally leaving out BatchNorm's weight and bias."""
    skip = set()
    if not batchnorm_affine:
        skip = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
                for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)
