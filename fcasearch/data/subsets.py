"""Deterministic class and fraction subsets (an ImageNet-100-style proxy of a larger dataset).

A class subset picks ``k`` classes: the first ``k`` in sorted-name order (``pick="first"``, the
same list on every machine and seed) or a seeded choice (``pick="random"``); an explicit list of
names or indices is also accepted. Labels are then renumbered ``0..k-1`` in the order of the
chosen classes (sorted by original index). A fraction subset keeps ``ceil(fraction * n_c)``
images of every class ``c`` (at least one), chosen with the seed; it applies to the training
split only, so the validation split stays the full measure of the chosen classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fcasearch.data.bundle import DataError

__all__ = ["SUBSET_PICKS", "fraction_indices", "remap_labels", "select_classes"]

SUBSET_PICKS = ("first", "random")


def select_classes(
    class_names: Sequence[str],
    subset: int | Sequence[int | str] | None,
    *,
    pick: str = "first",
    seed: int = 0,
) -> list[int]:
    """The original indices of the classes to keep, ascending.

    Args:
        class_names: all class names; index = original label.
        subset: ``None`` (all), a count ``k``, or a list of class names or indices.
        pick: for a count, ``"first"`` (the first ``k`` names in sorted order) or ``"random"``
            (a choice seeded by ``seed``).
        seed: seed of the random pick.

    Raises:
        DataError: for a count outside ``1..len(class_names)``, an unknown name or index, or an
            unknown ``pick``.
    """
    n = len(class_names)
    if subset is None:
        return list(range(n))
    if pick not in SUBSET_PICKS:
        raise DataError(f"subset_pick: {pick!r} is not one of {SUBSET_PICKS}")
    if isinstance(subset, bool):
        raise DataError(f"subset_classes: {subset!r} must be a count or a list of classes")
    if isinstance(subset, int):
        if not 1 <= subset <= n:
            raise DataError(
                f"subset_classes: {subset} must be between 1 and the {n} classes available"
            )
        if pick == "first":
            order = sorted(range(n), key=lambda i: str(class_names[i]))
            return sorted(order[:subset])
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(n, size=subset, replace=False))
    if isinstance(subset, str):
        subset = [subset]
    index = {str(name): i for i, name in enumerate(class_names)}
    chosen: set[int] = set()
    for item in subset:
        if isinstance(item, str) and item in index:
            chosen.add(index[item])
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and 0 <= item < n:
            chosen.add(int(item))
        else:
            shown = ", ".join(map(str, list(class_names)[:10])) + (" ..." if n > 10 else "")
            raise DataError(
                f"subset_classes: {item!r} is neither a class name nor an index 0..{n - 1}; "
                f"classes: {shown}"
            )
    if not chosen:
        raise DataError(
            "subset_classes: the list is empty; give at least one class or None for all"
        )
    return sorted(chosen)


def remap_labels(labels: np.ndarray, keep: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the samples whose label is in ``keep``, and their labels renumbered.

    Returns:
        ``(positions, new_labels)``: ``new_labels[j]`` is the index in ``keep`` of
        ``labels[positions[j]]``.
    """
    labels = np.asarray(labels)
    lookup = {old: new for new, old in enumerate(keep)}
    positions = np.flatnonzero(np.isin(labels, list(keep)))
    new = np.array([lookup[int(labels[p])] for p in positions], dtype=np.int64)
    return positions, new


def fraction_indices(labels: np.ndarray, fraction: float | None, seed: int = 0) -> np.ndarray:
    """Positions keeping ``ceil(fraction * n_c)`` samples of each class (at least one), seeded.

    Returns all positions, in order, when ``fraction`` is ``None`` or 1. The result is sorted,
    so the dataset order (and a seeded shuffle over it) does not depend on the choice order.

    Raises:
        DataError: for a fraction outside ``(0, 1]``.
    """
    labels = np.asarray(labels)
    if fraction is None or fraction == 1:
        return np.arange(len(labels))
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 < fraction <= 1
    ):
        raise DataError(
            f"subset_fraction: {fraction!r} must be in (0, 1], e.g. 0.1 for 10% per class"
        )
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        k = max(1, math.ceil(fraction * len(where)))
        keep.append(rng.choice(where, size=k, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)
