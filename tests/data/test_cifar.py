"""CIFAR-10/100 from a tiny home-made root in torchvision's python-pickle layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fcasearch.data import DataError, get_dataset


def _write(path, **entry):
    with path.open("wb") as f:
        pickle.dump(entry, f)


def _images(rng, n):
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


@pytest.fixture()
def cifar10_root(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write(
            folder / f"data_batch_{i}",
            data=_images(rng, 4),
            labels=[(i + j) % 10 for j in range(4)],
        )
    _write(folder / "test_batch", data=_images(rng, 6), labels=[0, 1, 2, 3, 4, 5])
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    _write(folder / "batches.meta", label_names=names)
    return tmp_path


def test_cifar10_reads_batches(cifar10_root):
    b = get_dataset("cifar10", root=cifar10_root, img_size=32)
    assert (b.num_classes, b.in_chans, len(b.train), len(b.val)) == (10, 3, 20, 6)
    assert b.class_names[0] == "airplane"
    x, y = b.val[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 2
    xb, yb = next(iter(DataLoader(b.train, batch_size=5)))
    assert xb.shape == (5, 3, 32, 32) and yb.tolist() == [1, 2, 3, 4, 2]


def test_cifar_resized_and_subset(cifar10_root):
    b = get_dataset(
        "cifar10",
        root=cifar10_root / "cifar-10-batches-py",
        img_size=64,
        subset_classes=["cat", "bird"],
    )
    assert b.class_names == ("bird", "cat") and b.num_classes == 2
    assert b.train[0][0].shape == (3, 64, 64)
    assert sorted(b.val.labels.tolist()) == [0, 1]


def test_val_transform_is_deterministic(cifar10_root):
    b = get_dataset("cifar10", root=cifar10_root, img_size=32)
    raw = b.val.images[0].float() / 255
    expected = (raw - torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]) / torch.tensor(
        [0.2470, 0.2435, 0.2616]
    )[:, None, None]
    assert torch.allclose(b.val[0][0], expected, atol=1e-5)


def test_cifar100_layout(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _write(folder / "train", data=_images(rng, 8), fine_labels=[0, 1, 2, 3, 96, 97, 98, 99])
    _write(folder / "test", data=_images(rng, 2), fine_labels=[99, 0])
    _write(folder / "meta", fine_label_names=[f"c{i:02d}" for i in range(100)])
    b = get_dataset("cifar100", root=tmp_path, img_size=32)
    assert b.num_classes == 100 and len(b.train) == 8 and b.val[0][1] == 99


def test_missing_root_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="--download"):
        get_dataset("cifar10", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="needs a local root"):
        get_dataset("cifar10")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        get_dataset("cifar10", root=tmp_path)


def test_incomplete_copy(cifar10_root):
    (cifar10_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3"):
        get_dataset("cifar10", root=cifar10_root)


def _dump(value):
    return pickle.dumps(value)


_GOOD = {"data": np.zeros((4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
CORRUPT_BATCHES = {
    "garbage": b"garbage",
    "empty": b"",
    "truncated": _dump(_GOOD)[:200],
    "huge_length": b"\x8e" + (2**62).to_bytes(8, "little") + b"abc",  # MemoryError in pickle
    "a_list": _dump([1, 2, 3]),
    "an_int": _dump(7),
    "no_labels": _dump({"data": _GOOD["data"]}),
    "wrong_shape": _dump({"data": np.zeros((4, 100), dtype=np.uint8), "labels": [0] * 4}),
    "strings": _dump({"data": [["x"] * 3072] * 4, "labels": [0] * 4}),
    "ragged": _dump({"data": [[0] * 3072, [0] * 5], "labels": [0, 1]}),
    "out_of_range_pixels": _dump({"data": [[300] * 3072] * 4, "labels": [0] * 4}),
    "too_few_labels": _dump({"data": _GOOD["data"], "labels": [0, 1]}),
    "label_beyond_classes": _dump({"data": _GOOD["data"], "labels": [0, 1, 2, 10]}),
    "negative_label": _dump({"data": _GOOD["data"], "labels": [0, 1, 2, -1]}),
}


@pytest.mark.parametrize("file", ["data_batch_1", "data_batch_4", "test_batch"])
@pytest.mark.parametrize("case", sorted(CORRUPT_BATCHES))
def test_corrupt_batch_is_one_line_data_error(cifar10_root, case, file):
    path = cifar10_root / "cifar-10-batches-py" / file
    path.write_bytes(CORRUPT_BATCHES[case])
    with pytest.raises(DataError, match="is not a readable CIFAR batch") as info:
        get_dataset("cifar10", root=cifar10_root)
    message = str(info.value)
    assert str(path) in message and "--download" in message and "\n" not in message


@pytest.mark.parametrize(
    "content",
    [b"garbage", _dump({"label_names": ["a", "b"]}), _dump({"other": 1}), _dump(["a"] * 10)],
    ids=["garbage", "too_few_names", "no_names", "a_list"],
)
def test_corrupt_meta_is_one_line_data_error(cifar10_root, content):
    path = cifar10_root / "cifar-10-batches-py" / "batches.meta"
    path.write_bytes(content)
    with pytest.raises(DataError, match="is not a readable CIFAR meta file") as info:
        get_dataset("cifar10", root=cifar10_root)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_batch_file_or_a_folder_in_its_place(cifar10_root):
    folder = cifar10_root / "cifar-10-batches-py"
    (folder / "data_batch_2").unlink()
    (folder / "data_batch_2").mkdir()
    with pytest.raises(DataError, match="lacks data_batch_2"):
        get_dataset("cifar10", root=cifar10_root)
    (folder / "data_batch_2").rmdir()
    (folder / "data_batch_1").unlink()
    with pytest.raises(DataError, match="has no cifar-10-batches-py/ with data_batch_1"):
        get_dataset("cifar10", root=cifar10_root)


def test_cifar100_corrupt_train(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match=r"train' is not a readable CIFAR batch"):
        get_dataset("cifar100", root=tmp_path)
