"""An ImageNet-style folder tree: ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``.

Classes are the sub-folders of ``train/`` in sorted order; ``val/`` must hold a folder for every
chosen class. Files are listed once, sorted, so the dataset order is the same on every machine.
Images are opened with PIL and converted to RGB (grayscale and palette files included).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from fcasearch.data.bundle import DataBundle, DataError
from fcasearch.data.subsets import fraction_indices, select_classes
from fcasearch.data.transforms import imagefolder_transform

__all__ = ["ImageListDataset", "load_imagefolder_bundle"]


class ImageListDataset(Dataset):
    """Images named by path, each with a label; the transform turns a PIL image into a tensor."""

    def __init__(self, samples: list[tuple[str, int]], transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(default_loader(path)), label


def _images_in(folder: Path) -> list[str]:
    return sorted(
        str(p) for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS)
    )


def _split_dir(root: Path, split: str) -> Path:
    path = root / split
    if not path.is_dir():
        raise DataError(
            f"root: {str(root)!r} has no {split}/ folder; an imagefolder root holds train/ and val/, "
            "each with one sub-folder of images per class"
        )
    return path


def load_imagefolder_bundle(
    img_size: tuple[int, int],
    *,
    root: str | Path | None,
    subset_classes: int | list[int | str] | None = None,
    subset_pick: str = "first",
    subset_fraction: float | None = None,
    seed: int = 0,
) -> DataBundle:
    """An ImageFolder tree as a :class:`DataBundle` with the standard transforms.

    Args:
        img_size: ``(height, width)`` of the crops.
        root: folder holding ``train/`` and ``val/``.
        subset_classes, subset_pick, subset_fraction, seed: see :mod:`fcasearch.data.subsets`
            (e.g. ``subset_classes=100`` for an ImageNet-100-style proxy).

    Raises:
        DataError: for a missing root or split folder, no class folders, a chosen class without
            images in either split, or a class missing from ``val/``.
    """
    if root is None:
        raise DataError(
            "root: imagefolder needs root=DIR (CLI: --data-root DIR) holding train/ and val/"
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"root: {str(root)!r} does not exist or is not a folder; give the folder holding train/ and val/"
        )
    train_dir, val_dir = _split_dir(root, "train"), _split_dir(root, "val")
    names = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not names:
        raise DataError(
            f"root: {str(train_dir)!r} is empty; it needs one sub-folder of images per class"
        )
    keep = select_classes(names, subset_classes, pick=subset_pick, seed=seed)
    samples: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    for new, old in enumerate(keep):
        for split, folder in (("train", train_dir), ("val", val_dir)):
            cls_dir = folder / names[old]
            if not cls_dir.is_dir():
                raise DataError(
                    f"root: {str(folder)!r} has no folder for class {names[old]!r}; every class of train/ needs one in val/"
                )
            files = _images_in(cls_dir)
            if not files:
                raise DataError(
                    f"root: {str(cls_dir)!r} is empty (no files ending in {', '.join(IMG_EXTENSIONS)}); "
                    "add images or drop the class"
                )
            samples[split] += [(f, new) for f in files]
    train = samples["train"]
    labels = np.array([label for _, label in train], dtype=np.int64)
    train = [train[i] for i in fraction_indices(labels, subset_fraction, seed)]
    return DataBundle(
        train=ImageListDataset(train, imagefolder_transform(img_size, train=True)),
        val=ImageListDataset(samples["val"], imagefolder_transform(img_size, train=False)),
        num_classes=len(keep),
        in_chans=3,
        name="imagefolder",
        img_size=tuple(img_size),
        class_names=tuple(names[i] for i in keep),
    )
