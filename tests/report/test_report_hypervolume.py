"""Exact hypervolume: hand-computed values, a unit-cell brute force, invariances, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcasearch.report import hypervolume


def cell_count(points: np.ndarray, side: int) -> int:
    """Brute force for integer points and reference (side, ..., side): count the unit cells
    [c, c + 1) of the grid that some point weakly dominates (p <= c in every coordinate)."""
    d = points.shape[1]
    cells = np.array(list(itertools.product(range(side), repeat=d)), dtype=float)  # (side^d, d)
    covered = (points[None, :, :] <= cells[:, None, :]).all(axis=2).any(axis=1)
    return int(covered.sum())


@st.composite
def integer_sets(draw):
    d = draw(st.integers(1, 4))
    side = draw(st.integers(2, 6 if d < 4 else 4))
    n = draw(st.integers(0, 12))
    rows = draw(
        st.lists(st.lists(st.integers(0, side + 1), min_size=d, max_size=d), min_size=n, max_size=n)
    )
    return np.array(rows, dtype=float).reshape(n, d), side


@settings(max_examples=200, deadline=None)
@given(integer_sets())
def test_matches_unit_cell_brute_force(data):
    pts, side = data
    ref = np.full(pts.shape[1], float(side))
    assert hypervolume(pts, ref) == pytest.approx(cell_count(pts, side), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(integer_sets(), st.data())
def test_invariant_to_dominated_points_and_duplicates(data, draw):
    pts, side = data
    ref = np.full(pts.shape[1], float(side))
    base = hypervolume(pts, ref)
    if len(pts):
        extra = pts[draw.draw(st.integers(0, len(pts) - 1))]
        worse = extra + draw.draw(st.integers(0, 3))  # weakly dominated by ``extra``
        grown = np.vstack([pts, extra, worse])
        assert hypervolume(grown, ref) == pytest.approx(base)
    assert hypervolume(pts[::-1], ref) == pytest.approx(base)  # order does not matter


def test_hand_computed_two_objectives():
    assert hypervolume([[1, 2], [2, 1]], [3, 3]) == pytest.approx(3.0)
    # staircase: 3*1 + 2*1 + 1*1
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([[0.5, 0.5]], [1.0, 2.0]) == pytest.approx(0.75)
    assert hypervolume([0.0, 0.0], [1.1, 1.1]) == pytest.approx(1.21)  # one point, 1-D input


def test_hand_computed_three_objectives():
    assert hypervolume([[0, 0, 0]], [1, 2, 3]) == pytest.approx(6.0)
    # boxes 2*2*1 and 1*1*2 overlapping in a unit cube
    assert hypervolume([[0, 0, 1], [1, 1, 0]], [2, 2, 2]) == pytest.approx(5.0)
    # three unit-thick slabs: 3*4 - 3*2 + 1
    assert hypervolume([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [2, 2, 2]) == pytest.approx(7.0)


def test_four_and_one_objectives():
    assert hypervolume([[0, 0, 0, 0]], [1, 2, 3, 4]) == pytest.approx(24.0)
    assert hypervolume([[3.0], [1.0], [2.0]], [4.0]) == pytest.approx(3.0)


def test_zero_when_nothing_beats_the_reference():
    assert hypervolume([[3, 1], [1, 3], [5, 5]], [3, 3]) == 0.0  # on the boundary counts nothing
    assert hypervolume(np.empty((0, 3)), [1, 1, 1]) == 0.0
    assert hypervolume([], [1, 1]) == 0.0
    # a point worse than the reference does not change the others' volume
    assert hypervolume([[1, 1], [9, 0]], [2, 2]) == pytest.approx(1.0)


def test_agrees_with_optuna_private_implementation():
    optuna_hv = pytest.importorskip("optuna._hypervolume")
    rng = np.random.default_rng(0)
    for d in (2, 3, 4):
        pts = rng.random((30, d))
        ref = np.full(d, 1.1)
        assert hypervolume(pts, ref) == pytest.approx(optuna_hv.compute_hypervolume(pts, ref))


@pytest.mark.parametrize(
    ("points", "ref", "match"),
    [
        ([[1, 2, 3]], [4, 4], "3 objectives but reference_point has 2"),
        ([[1, np.nan]], [2, 2], "finite"),
        ([[1, 2]], [2, np.inf], "finite"),
        ([[[1, 2]]], [2, 2], "2-D"),
        ([[1, 2]], [[2, 2]], "1-D"),
    ],
)
def test_bad_shapes_raise_clear_errors(points, ref, match):
    with pytest.raises(ValueError, match=match):
        hypervolume(points, ref)
