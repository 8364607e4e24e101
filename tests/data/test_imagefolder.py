"""ImageFolder trees (train/ and val/ class folders) made of small PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fcasearch.data import DataError, get_dataset

CLASSES = ("dog", "cat", "eel")


def _png(path, rng, mode="RGB", size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode).save(path)


@pytest.fixture()
def tree(tmp_path):
    rng = np.random.default_rng(0)
    for c in CLASSES:
        for i in range(4):
            _png(tmp_path / "train" / c / f"{i}.png", rng)
        _png(tmp_path / "val" / c / "0.png", rng, mode="L")  # grayscale: converted to RGB
    return tmp_path


def test_loads_with_standard_transforms(tree):
    b = get_dataset("imagefolder", root=tree, img_size=32)
    assert b.class_names == ("cat", "dog", "eel") and b.num_classes == 3 and b.in_chans == 3
    assert (len(b.train), len(b.val)) == (12, 3)
    x, y = b.train[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 1
    v1, v2 = b.val[0][0], b.val[0][0]
    assert v1.shape == (3, 32, 32) and torch.equal(
        v1, v2
    )  # val: resize + center crop, no randomness


def test_subset_of_classes_and_fraction(tree):
    b = get_dataset(
        "imagefolder", root=tree, img_size=(32, 48), subset_classes=2, subset_fraction=0.5
    )
    assert b.class_names == ("cat", "dog") and len(b.train) == 4 and len(b.val) == 2
    assert b.train[0][0].shape == (3, 32, 48)
    again = get_dataset(
        "imagefolder", root=tree, img_size=32, subset_classes=2, subset_fraction=0.5
    )
    assert [s[0] for s in again.train.samples] == [s[0] for s in b.train.samples]


def test_errors(tree, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        get_dataset("imagefolder", root=tmp_path / "missing")
    with pytest.raises(DataError, match="holding train/ and val/"):
        get_dataset("imagefolder")
    (tree / "train" / "fox").mkdir()
    with pytest.raises(DataError, match="fox' is empty"):
        get_dataset("imagefolder", root=tree)
    _png(tree / "train" / "fox" / "0.png", np.random.default_rng(1))
    with pytest.raises(DataError, match="no folder for class 'fox'"):
        get_dataset("imagefolder", root=tree)
    (tree / "val" / "fox").mkdir()
    with pytest.raises(DataError, match="fox' is empty"):
        get_dataset("imagefolder", root=tree)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    with pytest.raises(DataError, match="is empty"):
        get_dataset("imagefolder", root=empty)
    with pytest.raises(DataError, match="no val/ folder"):
        (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
        get_dataset("imagefolder", root=tmp_path / "only_train")
