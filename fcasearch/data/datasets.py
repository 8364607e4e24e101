"""``get_dataset``: one entry point for every dataset the project trains on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fcasearch.data.bundle import DataBundle, DataError, img_pair

__all__ = ["DATASETS", "get_dataset"]

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")


def get_dataset(
    name: str = "digits",
    *,
    img_size: int | Sequence[int] = 32,
    root: str | Path | None = None,
    download: bool = False,
    subset_classes: int | Sequence[int | str] | None = None,
    subset_fraction: float | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    subset_pick: str = "first",
) -> DataBundle:
    """Load a dataset as a :class:`DataBundle` of train and validation splits.

    Args:
        name: ``digits`` (bundled with scikit-learn, the default: never downloads), ``cifar10``,
            ``cifar100`` (a local root in torchvision's layout) or ``imagefolder`` (a root with
            ``train/`` and ``val/`` class folders).
        img_size: side or ``(height, width)`` of the images given to the model; any positive size
            (use :func:`~fcasearch.data.check_img_size` to check it against a model spec).
        root: the local folder of ``cifar10``, ``cifar100`` and ``imagefolder``; unused by digits.
        download: let torchvision fetch CIFAR into ``root`` (the only network access; off).
        subset_classes: keep ``k`` classes (``subset_pick`` says which) or a list of names/indices.
        subset_fraction: keep this fraction of every class of the training split, seeded.
        seed: seed of the random class pick and the fraction subset.
        val_fraction: digits only: share of each class held out for validation.
        subset_pick: ``"first"`` (first ``k`` classes in sorted-name order) or ``"random"``.

    Raises:
        DataError: an unknown name, a missing or empty root, a bad size or subset option.
    """
    size = img_pair(img_size)
    key = str(name).lower()
    if isinstance(subset_classes, Sequence) and not isinstance(subset_classes, str):
        subset_classes = list(subset_classes)
    subset = {
        "subset_classes": subset_classes,
        "subset_pick": subset_pick,
        "subset_fraction": subset_fraction,
        "seed": seed,
    }
    if key == "digits":
        from fcasearch.data.digits import load_digits_bundle

        return load_digits_bundle(size, val_fraction=val_fraction, **subset)
    if key in ("cifar10", "cifar100"):
        from fcasearch.data.cifar import load_cifar_bundle

        return load_cifar_bundle(key, size, root=root, download=download, **subset)
    if key == "imagefolder":
        from fcasearch.data.imagefolder import load_imagefolder_bundle

        return load_imagefolder_bundle(size, root=root, **subset)
    raise DataError(f"name: {name!r} is not a dataset; use one of {', '.join(DATASETS)}")
