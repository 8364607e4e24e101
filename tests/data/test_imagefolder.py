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


def test_undecodable_image_is_a_data_error_naming_it(tree):
    bad = tree / "train" / "cat" / "bad.png"  # sorts after 0..3.png: not checked up front
    bad.write_text("this is not a png\n")
    b = get_dataset("imagefolder", root=tree, img_size=32)
    index = [s[0] for s in b.train.samples].index(str(bad))
    with pytest.raises(DataError, match="remove or replace") as info:
        b.train[index]
    assert isinstance(info.value, ValueError) and str(bad) in str(info.value)
    assert "\n" not in str(info.value)
    b.train[index - 1]  # the others still load
    with pytest.raises(DataError, match=r"bad\.png"):
        list(torch.utils.data.DataLoader(b.train, batch_size=4))


def test_truncated_image_is_a_data_error(tree):
    path = tree / "val" / "dog" / "1.png"
    _png(path, np.random.default_rng(2), size=(64, 64))
    path.write_bytes(path.read_bytes()[:300])
    b = get_dataset("imagefolder", root=tree, img_size=32)
    index = [s[0] for s in b.val.samples].index(str(path))
    with pytest.raises(DataError, match=r"1\.png' cannot be opened or decoded.*truncated"):
        b.val[index]


def test_data_error_crosses_dataloader_workers(tree):
    (tree / "train" / "cat" / "9.png").write_bytes(b"GIF89a garbage")  # in the first batch
    b = get_dataset("imagefolder", root=tree, img_size=32)
    loader = torch.utils.data.DataLoader(b.train, batch_size=12, num_workers=1)
    with pytest.raises(DataError, match=r"9\.png"):
        next(iter(loader))


@pytest.mark.parametrize("split", ["train", "val"])
def test_unreadable_first_image_fails_when_built(tree, split):
    first = tree / split / "dog" / "0.png"
    first.write_text("version https://git-lfs.github.com/spec/v1\n")  # an LFS pointer
    with pytest.raises(DataError, match=r"dog/0\.png' cannot be opened.*remove or replace"):
        get_dataset("imagefolder", root=tree, img_size=32)


def test_images_without_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        _png(tmp_path / split / "a.png", rng)
    with pytest.raises(DataError, match="holds images but no class folders") as info:
        get_dataset("imagefolder", root=tmp_path)
    assert "train/<class>/" in str(info.value) and "is empty" not in str(info.value)
