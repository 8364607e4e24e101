"""Datasets (the bundled digits default, CIFAR, ImageFolder), subsets and transforms.

``get_dataset(name, img_size=...)`` returns a :class:`DataBundle`; every split yields
``(image (C, H, W) normalized float tensor, label int)``. Nothing downloads unless asked.
"""

from __future__ import annotations

from fcasearch.data.bundle import DataBundle, DataError, TensorImageDataset, check_img_size
from fcasearch.data.datasets import DATASETS, get_dataset
from fcasearch.data.subsets import fraction_indices, select_classes

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataError",
    "TensorImageDataset",
    "check_img_size",
    "fraction_indices",
    "get_dataset",
    "select_classes",
]
