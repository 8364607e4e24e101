"""The bundled digits dataset: shapes, normalization, the fixed split, subsets, errors."""

from __future__ import annotations

import collections

import pytest
import torch

from fcasearch.data import DataBundle, DataError, check_img_size, get_dataset
from fcasearch.models import get_spec


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return get_dataset("digits", img_size=32)


def test_shapes_and_labels(digits):
    assert digits.name == "digits" and digits.num_classes == 10 and digits.in_chans == 1
    assert digits.img_size == (32, 32)
    assert len(digits.train) + len(digits.val) == 1797
    image, label = digits.train[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10
    assert digits.class_names == tuple(str(i) for i in range(10))


def test_normalized_with_train_statistics(digits):
    x = digits.train.images
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


def test_split_is_stratified_and_fixed(digits):
    counts = collections.Counter(digits.val.labels.tolist())
    assert len(counts) == 10 and max(counts.values()) - min(counts.values()) <= 2
    again = get_dataset("digits", img_size=32, seed=7)  # the seed does not move the split
    assert torch.equal(again.val.images, digits.val.images)
    assert torch.equal(again.train.labels, digits.train.labels)


def test_resize_any_positive_size():
    b = get_dataset("digits", img_size=(16, 24))
    assert b.train[0][0].shape == (1, 16, 24) and b.img_size == (16, 24)


def test_class_and_fraction_subsets():
    b = get_dataset("digits", img_size=8, subset_classes=3)
    assert b.num_classes == 3 and b.class_names == ("0", "1", "2")
    assert set(b.train.labels.tolist()) == {0, 1, 2}
    r1 = get_dataset("digits", img_size=8, subset_classes=4, subset_pick="random", seed=3)
    r2 = get_dataset("digits", img_size=8, subset_classes=4, subset_pick="random", seed=3)
    assert r1.class_names == r2.class_names and r1.num_classes == 4
    named = get_dataset("digits", img_size=8, subset_classes=["7", 2])
    assert named.class_names == ("2", "7")
    full = get_dataset("digits", img_size=8)
    half = get_dataset("digits", img_size=8, subset_fraction=0.5)
    assert len(half.val) == len(full.val)  # the fraction applies to train only
    for c in range(10):
        n_full = int((full.train.labels == c).sum())
        assert int((half.train.labels == c).sum()) == -(-n_full // 2)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "mnist"}, "not a dataset"),
        ({"img_size": 0}, "img_size"),
        ({"img_size": (32, -1)}, "img_size"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"subset_classes": 11}, "subset_classes"),
        ({"subset_classes": ["cat"]}, "subset_classes"),
        ({"subset_fraction": 0.0}, "subset_fraction"),
        ({"subset_classes": 2, "subset_pick": "best"}, "subset_pick"),
    ],
)
def test_bad_options_name_the_field(kwargs, needle):
    with pytest.raises(DataError, match=needle):
        get_dataset(**{"name": "digits", "img_size": 8, **kwargs})


def test_check_img_size_against_a_spec():
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=10, in_chans=1)
    assert check_img_size(32, spec) == (32, 32)
    with pytest.raises(DataError, match="multiple of 32"):
        check_img_size(48, spec)
    with pytest.raises(DataError, match="built for 32x32"):
        check_img_size(64, spec)
    with pytest.raises(DataError, match="positive"):
        check_img_size(-32)
