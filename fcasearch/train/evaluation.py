"""Batching and evaluation helpers of the trainer: seeded batches, validation, BatchNorm recalibration.

:class:`Batches` gives the batches of one split with an order that depends on ``(seed, epoch)``
only (so a resumed run sees the same data as an uninterrupted one); :func:`evaluate` scores a
model on a split; :func:`recalibrate_batchnorm` re-estimates BatchNorm running statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fcasearch.data.bundle import TensorImageDataset

__all__ = ["AMP_DTYPES", "Batches", "evaluate", "is_oom", "recalibrate_batchnorm", "to_device"]

AMP_DTYPES = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error: CUDA's, or a CPU allocator failure."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


class Batches:
    """Batches of one split; epoch ``e``'s order is seeded by ``(seed, e)`` alone.

    Plain tensor datasets (no per-item transform) are sliced a batch at a time; others go through
    a ``DataLoader`` whose generator is reseeded at every epoch.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, *, train: bool, seed: int, workers: int, pin: bool
    ):
        self.dataset, self.train, self.seed = dataset, train, seed
        n = len(dataset)
        self.batch_size = min(batch_size, n) if train else batch_size
        self.fast = isinstance(dataset, TensorImageDataset) and dataset.transform is None
        self.generator = torch.Generator()
        if not self.fast:
            self.loader = DataLoader(
                dataset,
                batch_size=self.batch_size,
                shuffle=train,
                drop_last=train,
                num_workers=workers,
                pin_memory=pin,
                generator=self.generator,
            )

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def epoch(self, index: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.generator.manual_seed(self.seed * 1_000_003 + index)
        if not self.fast:
            yield from self.loader
            return
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.dataset.images[idx], self.dataset.labels[idx]


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Batches | Dataset,
    device: str | torch.device = "cpu",
    *,
    amp: str | None = None,
    channels_last: bool = False,
    batch_size: int = 128,
) -> tuple[float, float]:
    """Validation ``(loss, top-1 accuracy)`` of ``model`` in eval mode; loss without smoothing.

    ``batches`` is a dataset (batched here with ``batch_size``) or the trainer's batcher.
    """
    device = torch.device(device)
    if not isinstance(batches, Batches):
        batches = Batches(batches, batch_size, train=False, seed=0, workers=0, pin=False)
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    dtype = AMP_DTYPES[amp]
    for x, y in batches.epoch(0):
        x, y = to_device(x, y, device, channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        logits = logits.float()  # (B, classes)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == y).sum())
        count += len(y)
    model.train(was_training)
    return loss_sum / max(count, 1), correct / max(count, 1)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    num_batches: int,
    device: str | torch.device = "cpu",
    *,
    amp: str | None = None,
    channels_last: bool = False,
) -> int:
    """Re-estimate every BatchNorm's running mean and variance from ``num_batches`` batches.

    The statistics are reset, then accumulated as a cumulative average (momentum ``None``) of
    train-mode forward passes without gradients; momenta and the train/eval mode are restored.

    Returns:
        The number of batches used (0 when the model has no BatchNorm).
    """
    device = torch.device(device)
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms or num_batches <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    dtype = AMP_DTYPES[amp]
    used = 0
    for x, y in batches:
        if used >= num_batches:
            break
        x, _ = to_device(x, y, device, channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model(x)
        used += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return used
