"""CIFAR-10 and CIFAR-100 from a local root, in torchvision's python-pickle layout.

``root`` holds ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``)
or ``cifar-100-python/`` (``train``, ``test``, ``meta``), the folders torchvision downloads; a
root that is itself such a folder works too. Nothing is downloaded unless ``download=True``, which
asks torchvision to fetch and verify the archive into ``root``. Reading is done here (the same
pickle format torchvision reads) so that a partial or home-made copy gives a clear error rather
than a checksum failure. The validation split is the official test set.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fcasearch.data.bundle import DataBundle, DataError, TensorImageDataset
from fcasearch.data.subsets import fraction_indices, remap_labels, select_classes
from fcasearch.data.transforms import cifar_transform

__all__ = ["CIFAR_LAYOUTS", "CifarLayout", "load_cifar_bundle"]


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its files and which keys hold labels and names."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
        10,
    ),
    "cifar100": CifarLayout(
        "cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names", 100
    ),
}


_REFETCH = "download it again (download=True, CLI --download) or check the folder"


def _unreadable(path: Path, what: str, why: str) -> DataError:
    """The one-line error for a file of the CIFAR folder that cannot be used as ``what``."""
    why = " ".join(why.split())  # one line, whatever the underlying message held
    if len(why) > 160:
        why = why[:157] + "..."
    return DataError(f"root: {str(path)!r} is not a readable CIFAR {what} ({why}); {_REFETCH}")


def _unpickle(path: Path, what: str = "batch") -> dict:
    """The dict pickled in ``path``; a :class:`DataError` naming the file for anything else.

    A truncated, overwritten or foreign file can make ``pickle`` raise almost any exception
    (UnpicklingError, EOFError, ValueError, KeyError, ImportError; MemoryError when garbage
    bytes read as a huge length): all of them mean the same thing here.
    """
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise _unreadable(path, what, why) from None
    if not isinstance(entry, dict):
        raise _unreadable(path, what, f"it holds a {type(entry).__name__}, not a dict")
    return entry


def _find_folder(name: str, root: str | Path | None, download: bool) -> Path:
    layout = CIFAR_LAYOUTS[name]
    how = (
        f"pass root=DIR (CLI: --data-root DIR) naming a folder that holds {layout.folder}/, or add "
        "download=True (CLI: --download) to fetch it there (about 170 MB; needs the network)"
    )
    if root is None:
        raise DataError(f"root: {name} needs a local root and none was given; {how}")
    root = Path(root).expanduser()
    if download:
        _download(name, root)
    if not root.is_dir():
        raise DataError(f"root: {str(root)!r} does not exist or is not a folder; {how}")
    for folder in (root / layout.folder, root):
        if (folder / layout.train_files[0]).is_file():
            return folder
    raise DataError(
        f"root: {str(root)!r} has no {layout.folder}/ with {layout.train_files[0]}; {how}"
    )


def _download(name: str, root: Path) -> None:
    from torchvision import datasets

    root.mkdir(parents=True, exist_ok=True)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    cls(str(root), train=True, download=True)


def _int_array(value: object) -> np.ndarray | None:
    """``value`` as an integer array, or None when it is not one (ragged, floats, strings)."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        return None
    return array if array.dtype.kind in "iu" else None


def _read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one batch file, checked."""
    entry = _unpickle(path)
    key = layout.label_key
    if "data" not in entry or key not in entry:
        raise _unreadable(path, "batch", f"no 'data'/{key!r} entries")
    data = _int_array(entry["data"])
    if data is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shown = "not an integer array" if data is None else f"shape {data.shape}"
        raise _unreadable(path, "batch", f"'data' is {shown}; expected (N, 3072) bytes")
    if data.dtype != np.uint8 and data.size and (data.min() < 0 or data.max() > 255):
        raise _unreadable(path, "batch", "'data' holds values outside 0..255")
    labels = _int_array(entry[key])
    if labels is None or labels.shape != (len(data),):
        shown = "not a list of integers" if labels is None else f"of shape {labels.shape}"
        raise _unreadable(path, "batch", f"{key!r} is {shown}; expected {len(data)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise _unreadable(
            path, "batch", f"{key!r} holds labels outside 0..{layout.num_classes - 1}"
        )
    images = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)
    return images, labels.astype(np.int64, copy=False)


def _read_split(
    folder: Path, files: tuple[str, ...], layout: CifarLayout
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for file in files:
        path = folder / file
        if not path.is_file():
            raise DataError(
                f"root: {str(folder)!r} lacks {file} (incomplete copy); download it again "
                "(download=True, CLI --download) or restore the file"
            )
        x, y = _read_batch(path, layout)
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _class_names(folder: Path, layout: CifarLayout) -> list[str]:
    """The class names from the meta file; ``0..n-1`` as strings when the folder has none."""
    path = folder / layout.meta_file
    if not path.is_file():
        return [str(i) for i in range(layout.num_classes)]
    names = _unpickle(path, "meta file").get(layout.names_key)
    if (
        not isinstance(names, (list, tuple))
        or len(names) != layout.num_classes
        or not all(isinstance(n, (str, bytes)) for n in names)
    ):
        raise _unreadable(
            path,
            "meta file",
            f"{layout.names_key!r} is not a list of {layout.num_classes} class names",
        )
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def load_cifar_bundle(
    name: str,
    img_size: tuple[int, int],
    *,
    root: str | Path | None,
    download: bool = False,
    subset_classes: int | list[int | str] | None = None,
    subset_pick: str = "first",
    subset_fraction: float | None = None,
    seed: int = 0,
) -> DataBundle:
    """CIFAR-10 or CIFAR-100 as a :class:`DataBundle` (val = the official test set).

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        img_size: ``(height, width)``; images are resized from 32x32 when it differs.
        root: the local folder (see the module docstring).
        download: fetch the archive into ``root`` first (only when asked).
        subset_classes, subset_pick, subset_fraction, seed: see :mod:`fcasearch.data.subsets`.

    Raises:
        DataError: for a missing root, a missing file, or a file that is not a readable CIFAR
            batch or meta file (truncated, overwritten, wrong shapes or labels); one line naming
            the file.
    """
    layout = CIFAR_LAYOUTS[name]
    folder = _find_folder(name, root, download)
    names = _class_names(folder, layout)
    x_train, y_train = _read_split(folder, layout.train_files, layout)
    x_val, y_val = _read_split(folder, layout.test_files, layout)
    keep = select_classes(names, subset_classes, pick=subset_pick, seed=seed)
    pos_t, y_train = remap_labels(y_train, keep)
    pos_v, y_val = remap_labels(y_val, keep)
    x_train, x_val = x_train[pos_t], x_val[pos_v]
    frac = fraction_indices(y_train, subset_fraction, seed)
    x_train, y_train = x_train[frac], y_train[frac]
    if not len(y_train) or not len(y_val):
        raise DataError(f"root: {str(folder)!r} gives no images for the chosen classes")
    return DataBundle(
        train=TensorImageDataset(
            torch.from_numpy(x_train),
            torch.from_numpy(y_train),
            cifar_transform(img_size, train=True),
        ),
        val=TensorImageDataset(
            torch.from_numpy(x_val), torch.from_numpy(y_val), cifar_transform(img_size, train=False)
        ),
        num_classes=len(keep),
        in_chans=3,
        name=name,
        img_size=tuple(img_size),
        class_names=tuple(names[i] for i in keep),
    )
