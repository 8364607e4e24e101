"""An ImageNet-style folder tree: ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``.

Classes are the sub-folders of ``train/`` in sorted order; ``val/`` must hold a folder for every
chosen class. Files are listed once, sorted, so the dataset order is the same on every machine.
Images are opened with PIL and converted to RGB (grayscale and palette files included).

A file that PIL cannot open or decode (a text file named ``.png``, a truncated download, a Git
LFS pointer) raises :class:`~fcasearch.data.DataError` naming it, from ``__getitem__``. When
the dataset is built, the first image of every class in each split is decoded (at reduced
scale where the format allows) so that a tree of such files fails at once, not in every trial;
the rest are only read when used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from fcasearch.data.bundle import DataBundle, DataError
from fcasearch.data.subsets import fraction_indices, select_classes
from fcasearch.data.transforms import imagefolder_transform

__all__ = ["ImageListDataset", "load_image", "load_imagefolder_bundle"]

_LAYOUT = (
    "an imagefolder root holds train/<class>/<image> and val/<class>/<image>: one sub-folder of "
    "images per class, the same class names in both"
)


def load_image(path: str, *, draft: bool = False) -> Image.Image:
    """The image at ``path`` as an RGB PIL image.

    Args:
        path: the image file.
        draft: let PIL decode at a reduced scale where the format allows it (JPEG): a cheap check
            that the file decodes, not an image to train on.

    Raises:
        DataError: the file cannot be opened or decoded (any error PIL raises: unknown format,
            truncated data, a decompression bomb, ...), naming it and saying to remove or
            replace it.
    """
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            if draft:
                image.draft("RGB", (64, 64))
            return image.convert("RGB")  # decodes now, while the file is open
    except Exception as exc:
        if isinstance(exc, UnidentifiedImageError):
            why = "not an image format PIL recognises"
        else:
            why = " ".join(f"{type(exc).__name__}: {exc}".split())
            why = why if len(why) <= 160 else why[:157] + "..."
        raise DataError(
            f"root: {path!r} cannot be opened or decoded as an image ({why}); remove or replace "
            "the file"
        ) from None


class ImageListDataset(Dataset):
    """Images named by path, each with a label; the transform turns a PIL image into a tensor."""

    def __init__(self, samples: list[tuple[str, int]], transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(image, label)``; :class:`DataError` naming the file when it does not decode."""
        path, label = self.samples[index]
        return self.transform(load_image(path)), label


def _images_in(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if _is_image(p))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMG_EXTENSIONS)


def _split_dir(root: Path, split: str) -> Path:
    path = root / split
    if not path.is_dir():
        raise DataError(
            f"root: {str(root)!r} has no {split}/ folder; an imagefolder root holds train/ and val/, "
            "each with one sub-folder of images per class"
        )
    return path


def _check_first_images(samples: list[tuple[str, int]]) -> None:
    """Decode the first image of every label: a tree of unreadable files fails here, once."""
    seen: set[int] = set()
    for path, label in samples:
        if label not in seen:
            seen.add(label)
            load_image(path, draft=True)


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
        DataError: for a missing root or split folder, no class folders (images loose in
            ``train/`` included), a chosen class without images in either split, a class missing
            from ``val/``, or a first image of a class that does not decode.
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
    if not names and any(_is_image(p) for p in train_dir.iterdir()):
        raise DataError(
            f"root: {str(train_dir)!r} holds images but no class folders; {_LAYOUT} "
            "(move each class's images into its own sub-folder)"
        )
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
    _check_first_images(train)
    _check_first_images(samples["val"])
    return DataBundle(
        train=ImageListDataset(train, imagefolder_transform(img_size, train=True)),
        val=ImageListDataset(samples["val"], imagefolder_transform(img_size, train=False)),
        num_classes=len(keep),
        in_chans=3,
        name="imagefolder",
        img_size=tuple(img_size),
        class_names=tuple(names[i] for i in keep),
    )
