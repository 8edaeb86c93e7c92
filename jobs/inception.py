"""The small Inception of Zhang et al. 2017 (Appendix A, Figure 3), as the group-GPU PyTorch
tutorial sketches it.

Channels exactly as in the paper; its Table 1 counts 1,649,402 parameters: the
convolutions with their biases and the classifier, not BatchNorm's affine pairs.
The paper crops CIFAR to 28x28; we feed 32x32, which changes feature-map sizes
only (the final pooling is global either way), never the parameter count.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvModule(nn.Module):
    """Conv (with bias) -> BatchNorm (eps 1e-3) -> ReLU; the tutorial's stub, unchanged."""

    def __init__(self, in_ch: int, out_ch: int, k: int, stride: int, padding=(0, 0)):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=k, stride=stride, padding=padding)
        self.batchNorm = nn.BatchNorm2d(out_ch, eps=0.001)

    def forward(self, x):
        return F.relu(self.batchNorm(self.conv(x)), inplace=True)


class InceptionModule(nn.Module):
    """1x1 conv (C1 channels) beside a 3x3 conv (C3 channels), concatenated: C1 + C3 out."""

    def __init__(self, in_ch: int, c1: int, c3: int):
        super().__init__()
        self.branch1 = ConvModule(in_ch, c1, 1, 1)
        self.branch3 = ConvModule(in_ch, c3, 3, 1, padding=(1, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch3(x)], 1)


class DownsampleModule(nn.Module):
    """3x3 stride-2 conv (C3 channels) beside a 3x3 stride-2 max-pool: C3 + in channels out."""

    def __init__(self, in_ch: int, c3: int):
        super().__init__()
        self.branch3 = ConvModule(in_ch, c3, 3, 2)
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3(x), self.pool(x)], 1)


class SmallInception(nn.Module):
    """Zhang et al.'s small Inception: conv 96, 2 Inception, down, 4 Inception, down,
    2 Inception, global mean pool, fc 336->10."""

    def __init__(self, num_class: int = 10):
        super().__init__()
        self.conv1 = ConvModule(3, 96, 3, 1)
        self.inc1_1 = InceptionModule(96, 32, 32)
        self.inc1_2 = InceptionModule(64, 32, 48)
        self.down1 = DownsampleModule(80, 80)
        self.inc2_1 = InceptionModule(160, 112, 48)
        self.inc2_2 = InceptionModule(160, 96, 64)
        self.inc2_3 = InceptionModule(160, 80, 80)
        self.inc2_4 = InceptionModule(160, 48, 96)
        self.down2 = DownsampleModule(144, 96)
        self.inc3_1 = InceptionModule(240, 176, 160)
        self.inc3_2 = InceptionModule(336, 176, 160)
        self.fc = nn.Linear(336, num_class)

    def forward(self, x):
        x = self.conv1(x)
        x = self.down1(self.inc1_2(self.inc1_1(x)))
        x = self.inc2_4(self.inc2_3(self.inc2_2(self.inc2_1(x))))
        x = self.inc3_2(self.inc3_1(self.down2(x)))
        # Mean over H, W rather than AdaptiveAvgPool2d: same value, deterministic CUDA backward.
        return self.fc(x.mean(dim=(2, 3)))
