"""Standard image transforms (torchvision ``transforms.v2``) and normalization statistics.

* CIFAR (uint8 ``(3, 32, 32)`` tensors): train = random crop with 4-pixel zero padding, horizontal
  flip; both splits resized (bilinear, antialiased) when the model size is not 32, then scaled to
  [0, 1] and normalized with the CIFAR training-set mean and std.
* ImageFolder (PIL images): train = ``RandomResizedCrop(img_size)`` and horizontal flip; val =
  the shorter edge resized to ``side / 0.875``, then ``CenterCrop(img_size)`` (the usual 224/256
  ratio); both normalized with the ImageNet mean and std.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VAL_CROP_RATIO",
    "cifar_transform",
    "imagefolder_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# per-channel mean and standard deviation of the CIFAR-10 training pixels, in [0, 1]
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
VAL_CROP_RATIO = 0.875  # val: resize to side / ratio, then center-crop the side


def _finish(mean: tuple[float, ...], std: tuple[float, ...]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def cifar_transform(img_size: tuple[int, int], train: bool) -> v2.Compose:
    """Transform of one uint8 ``(3, 32, 32)`` CIFAR tensor to a normalized ``(3, H, W)`` float."""
    steps: list[v2.Transform] = []
    if train:
        steps += [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
    if tuple(img_size) != (32, 32):
        steps.append(v2.Resize(list(img_size), antialias=True))
    return v2.Compose(steps + _finish(CIFAR_MEAN, CIFAR_STD))


def imagefolder_transform(img_size: tuple[int, int], train: bool) -> v2.Compose:
    """Transform of one PIL image (any size, RGB) to a normalized ``(3, H, W)`` float tensor."""
    if train:
        steps: list[v2.Transform] = [
            v2.ToImage(),
            v2.RandomResizedCrop(list(img_size), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        short_side = round(max(img_size) / VAL_CROP_RATIO)  # the shorter image edge, kept aspect
        steps = [v2.ToImage(), v2.Resize(short_side, antialias=True), v2.CenterCrop(list(img_size))]
    return v2.Compose(steps + _finish(IMAGENET_MEAN, IMAGENET_STD))
