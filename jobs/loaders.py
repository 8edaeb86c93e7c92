"""Batches for training and evaluation: the `workers` loader and the `device` loader.

Both yield the same uint8 batches for the same epoch: the order is a permutation
seeded by (data_order seed, epoch) and each sample's crop and flip are keyed by
(augment seed, epoch, sample index).  No draw depends on worker RNG state or on
how many batches came before, so num_workers does not change the result and a
resumed run can start mid-epoch.  Normalisation happens on the device, after the
uint8 bytes arrive: a quarter of the float traffic, and one code path for both.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from jobs.data import CIFAR_MEAN, CIFAR_STD, Arrays
from jobs.seeding import epoch_seed, make_generator, seed_worker

PAD = 4  # random crop with padding 4, as torchvision's RandomCrop(32, padding=4)


def epoch_order(n: int, order_seed: int, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
    """Returns (a permutation of range(n), its generator) for one epoch, keyed by the epoch."""
    gen = make_generator(epoch_seed(order_seed, epoch))
    return torch.randperm(n, generator=gen), gen


def augment_params(n: int, augment_seed: int, epoch: int) -> torch.Tensor:
    """Returns (n, 3) int64: crop row offset, crop column offset, flip, per sample index."""
    gen = make_generator(epoch_seed(augment_seed, epoch))
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=gen)
    flips = torch.randint(0, 2, (n, 1), generator=gen)
    return torch.cat([offsets, flips], dim=1)


def augment(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Returns images (B, 3, 32, 32) uint8 randomly cropped (zero padding 4) and flipped."""
    b, c, h, w = images.shape
    padded = F.pad(images, (PAD, PAD, PAD, PAD))
    dev = images.device
    rows = (params[:, 0:1] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (params[:, 1:2] + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(b, device=dev)[:, None, None, None],
                 torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    return torch.where(params[:, 2, None, None, None].bool(), out.flip(3), out)


class Normalizer:
    """Turns uint8 batches into the PRNG lecture's normalised floats on the device."""

    def __init__(self, device: torch.device, channels_last: bool):
        self.mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1) * 255)
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) * self.inv_std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class _BatchDataset(torch.utils.data.Dataset):
    """Returns a whole batch per item: one (indices, augment params or None) in, tensors out."""

    def __init__(self, arrays: Arrays):
        self.images = arrays.images
        self.labels = arrays.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item):
        indices, params = item
        x = torch.from_numpy(self.images[indices])
        if params is not None:
            x = augment(x, params)
        return x, torch.from_numpy(self.labels[indices])


class WorkersLoader:
    """torch DataLoader over the uint8 arrays; each worker assembles whole batches."""

    def __init__(self, arrays: Arrays, device: torch.device, num_workers: int):
        self.dataset = _BatchDataset(arrays)
        self.device = device
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, order: torch.Tensor, params: torch.Tensor | None, batch_size: int,
                start: int = 0, drop_last: bool = True,
                generator: torch.Generator | None = None) -> Iterator[tuple]:
        """Yields (images uint8, labels) on the device, batch `start` onward, in `order`."""
        order = order.numpy()
        items = [(idx, None if params is None else params[torch.from_numpy(idx)])
                 for idx in _split(order, batch_size, start, drop_last)]
        loader = torch.utils.data.DataLoader(
            self.dataset, sampler=items, batch_size=None, num_workers=self.num_workers,
            worker_init_fn=seed_worker, generator=generator or make_generator(0),
            pin_memory=self.device.type == "cuda")
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class DeviceLoader:
    """The whole uint8 data set resident on the device; batches gathered and augmented there."""

    def __init__(self, arrays: Arrays, device: torch.device):
        self.images = torch.from_numpy(arrays.images).to(device)
        self.labels = torch.from_numpy(arrays.labels).to(device)
        self.device = device

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, order: torch.Tensor, params: torch.Tensor | None, batch_size: int,
                start: int = 0, drop_last: bool = True,
                generator: torch.Generator | None = None) -> Iterator[tuple]:
        """Yields (images uint8, labels) on the device, batch `start` onward, in `order`."""
        order = order.to(self.device)
        params = None if params is None else params.to(self.device)
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for begin in range(start * batch_size, stop, batch_size):
            idx = order[begin:begin + batch_size]
            x = self.images[idx]
            yield (x if params is None else augment(x, params[idx])), self.labels[idx]


def _split(order: np.ndarray, batch_size: int, start: int, drop_last: bool) -> list:
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    return [order[i:i + batch_size] for i in range(start * batch_size, stop, batch_size)]


def make_loader(kind: str, arrays: Arrays, device: torch.device, num_workers: int):
    """Returns a WorkersLoader or a DeviceLoader over `arrays`."""
    if kind == "device":
        return DeviceLoader(arrays, device)
    return WorkersLoader(arrays, device, num_workers)
