"""The data layer's common types: :class:`DataBundle`, :class:`DataError`, tensor datasets and
the image-size check.

Every dataset in :mod:`fcasearch.data` yields ``(image, label)`` pairs where ``image`` is a
normalized float tensor of shape ``(C, H, W)`` and ``label`` a Python ``int`` in
``[0, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["DataBundle", "DataError", "TensorImageDataset", "check_img_size", "img_pair"]


class DataError(ValueError):
    """A dataset that cannot be loaded as asked; the message names the option and the fix."""


def img_pair(img_size: int | Sequence[int], field: str = "img_size") -> tuple[int, int]:
    """``img_size`` as a ``(height, width)`` pair of positive ints.

    Raises:
        DataError: for a non-positive side, a non-integer, or a sequence not of length 2.
    """
    if isinstance(img_size, int) and not isinstance(img_size, bool):
        pair = (img_size, img_size)
    elif isinstance(img_size, Sequence) and not isinstance(img_size, str) and len(img_size) == 2:
        pair = tuple(img_size)
    else:
        raise DataError(f"{field}: {img_size!r} must be an int or a (height, width) pair")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise DataError(f"{field}: {img_size!r} must hold positive integers (pixels)")
    return pair  # type: ignore[return-value]


def check_img_size(img_size: int | Sequence[int], spec: Any = None) -> tuple[int, int]:
    """Check that images of ``img_size`` can go through the model described by ``spec``.

    The data layer accepts any positive size; the model does not. A FcaFormer with ``k`` stages
    needs each side to be a multiple of ``2 ** (k + 1)`` (32 for four stages), and the model's
    positional tables are built for exactly its spec's ``img_size``.

    Args:
        img_size: the side (int) or ``(height, width)`` of the images the data layer will give.
        spec: an :class:`~fcasearch.spec.ArchSpec` (anything with ``stages`` and ``img_size``);
            ``None`` checks only that the size is positive.

    Returns:
        The size as a ``(height, width)`` pair.

    Raises:
        DataError: naming the size, what the model needs and a size that would work.
    """
    pair = img_pair(img_size)
    if spec is None:
        return pair
    mult = 2 ** (len(spec.stages) + 1)
    for side in pair:
        if side % mult:
            near = max(mult, round(side / mult) * mult)
            raise DataError(
                f"img_size: {pair[0]}x{pair[1]} cannot go through a {len(spec.stages)}-stage model: "
                f"each side must be a multiple of {mult} (stride-4 stem, then /2 per stage); "
                f"use e.g. {near}"
            )
    spec_size = tuple(spec.img_size)
    if spec_size != pair:
        raise DataError(
            f"img_size: the data is {pair[0]}x{pair[1]} but the model was built for "
            f"{spec_size[0]}x{spec_size[1]} (its bias tables are sized for one resolution); "
            f"load the data with img_size={spec_size[0] if spec_size[0] == spec_size[1] else spec_size}"
        )
    return pair


class TensorImageDataset(Dataset):
    """Images already preprocessed into one tensor, with an optional per-item transform.

    Attributes:
        images: ``(N, C, H, W)`` tensor (float and normalized when ``transform`` is None).
        labels: ``(N,)`` int64 tensor.
        transform: applied to one image on access; ``None`` means the images are final, which
            lets the trainer slice whole batches at once.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"images {tuple(images.shape)} and labels {tuple(labels.shape)}: need (N, C, H, W) and (N,)"
            )
        self.images = images
        self.labels = labels.long()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


@dataclass(frozen=True)
class DataBundle:
    """A train/validation pair and what a model needs to know about it.

    Attributes:
        train: the training split (yields ``(image (C, H, W) float, label int)``).
        val: the validation split (no random augmentation).
        num_classes: number of classes (after any class subset).
        in_chans: image channels.
        name: the dataset name (``digits``, ``cifar10``, ...).
        img_size: ``(height, width)`` of the images.
        class_names: the class names, index = label.
    """

    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int
    name: str
    img_size: tuple[int, int]
    class_names: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line: name, size, classes and split sizes."""
        h, w = self.img_size
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val images, "
            f"{self.num_classes} classes, {self.in_chans}x{h}x{w}"
        )
