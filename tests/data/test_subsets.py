"""Class and fraction subsets: deterministic, per class, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from fcasearch.data import DataError, fraction_indices, select_classes
from fcasearch.data.subsets import remap_labels

NAMES = ["zebra", "ant", "moth", "bee", "cat"]


def test_first_k_is_sorted_by_name():
    assert select_classes(NAMES, 2) == [1, 3]  # ant, bee
    assert select_classes(NAMES, None) == [0, 1, 2, 3, 4]


def test_random_pick_is_seeded():
    a = select_classes(NAMES, 3, pick="random", seed=1)
    assert a == select_classes(NAMES, 3, pick="random", seed=1) and len(a) == 3 and a == sorted(a)
    picks = {tuple(select_classes(NAMES, 3, pick="random", seed=s)) for s in range(10)}
    assert len(picks) > 1


def test_explicit_list_and_errors():
    assert select_classes(NAMES, ["cat", 0]) == [0, 4]
    with pytest.raises(DataError, match="'dog'"):
        select_classes(NAMES, ["dog"])
    with pytest.raises(DataError, match="between 1 and"):
        select_classes(NAMES, 0)


def test_fraction_per_class_and_remap():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 1)
    idx = fraction_indices(labels, 0.3, seed=0)
    assert np.bincount(labels[idx]).tolist() == [3, 1, 1]
    assert np.array_equal(idx, fraction_indices(labels, 0.3, seed=0)) and np.all(np.diff(idx) > 0)
    assert np.array_equal(fraction_indices(labels, None), np.arange(14))
    pos, new = remap_labels(labels, [1, 2])
    assert pos.tolist() == [10, 11, 12, 13] and new.tolist() == [0, 0, 0, 1]
