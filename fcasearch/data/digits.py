"""The bundled default: scikit-learn's handwritten digits (no download, ever).

1,797 grayscale 8x8 images of the digits 0-9 (UCI optical recognition of handwritten digits),
shipped inside scikit-learn. The split is stratified and fixed (seed :data:`SPLIT_SEED`, not the
caller's seed), so every run and every trial is scored on the same validation images. Images are
scaled from 0..16 to [0, 1], resized once with bilinear interpolation to the model's size and
normalized with the training split's mean and standard deviation; both splits are then plain
tensors (:class:`~fcasearch.data.bundle.TensorImageDataset`), so loading costs nothing. There is
no augmentation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fcasearch.data.bundle import DataBundle, DataError, TensorImageDataset
from fcasearch.data.subsets import fraction_indices, remap_labels, select_classes

__all__ = ["SPLIT_SEED", "load_digits_bundle"]

SPLIT_SEED = 0  # the fixed seed of the stratified train/val split
_DIGIT_MAX = 16.0  # pixel values of load_digits are 0..16


def _resize(images: np.ndarray, img_size: tuple[int, int]) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / _DIGIT_MAX).unsqueeze(1)  # (N, 1, 8, 8)
    if tuple(img_size) == (8, 8):
        return x.contiguous()
    return F.interpolate(x, size=img_size, mode="bilinear", align_corners=False)  # (N, 1, H, W)


def load_digits_bundle(
    img_size: tuple[int, int],
    *,
    val_fraction: float = 0.2,
    subset_classes: int | list[int | str] | None = None,
    subset_pick: str = "first",
    subset_fraction: float | None = None,
    seed: int = 0,
) -> DataBundle:
    """The digits dataset as a :class:`DataBundle` of preprocessed tensors.

    Args:
        img_size: ``(height, width)`` the images are resized to.
        val_fraction: share of each class held out for validation, in (0, 1).
        subset_classes: keep only these classes (count or list; see :mod:`fcasearch.data.subsets`).
        subset_pick: ``"first"`` or ``"random"`` for a class count.
        subset_fraction: keep this fraction of each class of the training split.
        seed: seed of the random class pick and of the fraction subset (the split is fixed).

    Raises:
        DataError: for a ``val_fraction`` outside (0, 1) or a bad subset option.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0 < val_fraction < 1
    ):
        raise DataError(f"val_fraction: {val_fraction!r} must be in (0, 1), e.g. 0.2")
    raw = load_digits()
    images, labels = raw.images, raw.target.astype(np.int64)  # (1797, 8, 8) in 0..16, (1797,)
    names = [str(c) for c in raw.target_names]
    keep = select_classes(names, subset_classes, pick=subset_pick, seed=seed)
    positions, labels = remap_labels(labels, keep)
    images = images[positions]
    n_classes = len(keep)
    n_val = round(val_fraction * len(labels))
    if n_val < n_classes or len(labels) - n_val < n_classes:
        raise DataError(
            f"val_fraction: {val_fraction} leaves a split with fewer images than the {n_classes} "
            "classes; use a value nearer 0.2"
        )
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=n_val, stratify=labels, random_state=SPLIT_SEED
    )
    train_idx = np.sort(train_idx)
    train_idx = train_idx[fraction_indices(labels[train_idx], subset_fraction, seed)]
    val_idx = np.sort(val_idx)

    x_train = _resize(images[train_idx], img_size)
    x_val = _resize(images[val_idx], img_size)
    mean, std = x_train.mean(), x_train.std()
    x_train = (x_train - mean) / std
    x_val = (x_val - mean) / std
    return DataBundle(
        train=TensorImageDataset(x_train, torch.from_numpy(labels[train_idx])),
        val=TensorImageDataset(x_val, torch.from_numpy(labels[val_idx])),
        num_classes=n_classes,
        in_chans=1,
        name="digits",
        img_size=tuple(img_size),
        class_names=tuple(names[i] for i in keep),
    )
