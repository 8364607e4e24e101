"""Dominance, non-dominated sorting and the knee point: properties and known cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcasearch.metrics import Objective
from fcasearch.report import dominates, knee_point, non_dominated_sort, pareto_mask, to_minimization
from fcasearch.report.analysis import confirm_front, rank_trials

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def point_sets(draw, min_points=0, max_points=25):
    d = draw(st.integers(1, 4))
    n = draw(st.integers(min_points, max_points))
    rows = draw(
        st.lists(st.lists(st.integers(0, 5), min_size=d, max_size=d), min_size=n, max_size=n)
    )
    dirs = draw(st.lists(st.sampled_from(["minimize", "maximize"]), min_size=d, max_size=d))
    return np.array(rows, dtype=float).reshape(n, d), dirs


@st.composite
def dominance_chain(draw):
    """Three points a, b, c with a dominating b and b dominating c (all minimized)."""
    d = draw(st.integers(1, 4))
    a = np.array(draw(st.lists(st.integers(-5, 5), min_size=d, max_size=d)), dtype=float)

    def worse(p):
        delta = np.array(draw(st.lists(st.integers(0, 3), min_size=d, max_size=d)), dtype=float)
        delta[draw(st.integers(0, d - 1))] += 1  # strictly worse somewhere
        return p + delta

    b = worse(a)
    return a, b, worse(b)


@SETTINGS
@given(point_sets(min_points=1))
def test_dominance_is_irreflexive_and_asymmetric(data):
    pts, dirs = data
    for a in pts:
        assert not dominates(a, a, dirs)
    for a in pts[:8]:
        for b in pts[:8]:
            if dominates(a, b, dirs):
                assert not dominates(b, a, dirs)


@SETTINGS
@given(dominance_chain())
def test_dominance_is_transitive(chain):
    a, b, c = chain
    assert dominates(a, b) and dominates(b, c)
    assert dominates(a, c)


@SETTINGS
@given(point_sets(min_points=3, max_points=6))
def test_dominance_transitive_on_random_triples(data):
    pts, dirs = data
    for a in pts:
        for b in pts:
            for c in pts:
                if dominates(a, b, dirs) and dominates(b, c, dirs):
                    assert dominates(a, c, dirs)


@SETTINGS
@given(point_sets())
def test_sort_ranks_are_fronts(data):
    pts, dirs = data
    ranks = non_dominated_sort(pts, dirs)
    assert ranks.shape == (len(pts),)
    if not len(pts):
        return
    assert ranks.min() == 0 and set(ranks) == set(range(ranks.max() + 1))
    for k in range(ranks.max() + 1):
        members = pts[ranks == k]
        for a in members:  # no point dominates another within a rank
            assert not any(dominates(a, b, dirs) for b in members)
        if k > 0:  # every point of rank k is dominated by some point of rank k - 1
            previous = pts[ranks == k - 1]
            for b in members:
                assert any(dominates(a, b, dirs) for a in previous)


@SETTINGS
@given(point_sets())
def test_front_matches_brute_force(data):
    pts, dirs = data
    expected = [not any(dominates(b, a, dirs) for b in pts) for a in pts]
    assert pareto_mask(pts, dirs).tolist() == expected
    assert ((non_dominated_sort(pts, dirs) == 0) == np.array(expected, dtype=bool)).all()


@SETTINGS
@given(point_sets())
def test_directions_equal_negation(data):
    pts, dirs = data
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in dirs])
    flipped = pts * sign if len(pts) else pts
    assert (non_dominated_sort(pts, dirs) == non_dominated_sort(flipped)).all()
    # maximizing everything reverses minimizing everything
    all_max = ["maximize"] * pts.shape[1]
    assert (non_dominated_sort(pts, all_max) == non_dominated_sort(-pts if len(pts) else pts)).all()


def test_known_ranks_with_directions():
    # accuracy (max) and MACs (min)
    pts = [[0.9, 100], [0.8, 50], [0.7, 60], [0.9, 120], [0.6, 200]]
    ranks = non_dominated_sort(pts, ["maximize", "minimize"])
    assert ranks.tolist() == [0, 0, 1, 1, 2]
    assert dominates([0.9, 100], [0.9, 120], ["maximize", "minimize"])
    assert dominates([0.8, 50], [0.9, 100], ["minimize", "minimize"])
    assert not dominates([0.8, 50], [0.9, 100], ["maximize", "minimize"])


def test_duplicates_share_a_rank():
    ranks = non_dominated_sort([[1, 1], [1, 1], [2, 2]])
    assert ranks.tolist() == [0, 0, 1]


def test_knee_two_objectives():
    # a convex front with an obvious bend at (0.1, 0.1)
    front = [[0.0, 1.0], [0.1, 0.1], [0.5, 0.05], [1.0, 0.0]]
    assert knee_point(front) == 1
    # same front as accuracy (max) vs cost (min): the knee does not depend on the encoding
    acc_cost = [[0.5, 0.0], [0.95, 0.1], [0.97, 0.5], [1.0, 1.0]]  # bend at 0.95 accuracy
    assert knee_point(acc_cost, ["maximize", "minimize"]) == 1


def test_knee_three_objectives_is_closest_to_ideal():
    front = [[0, 1, 1], [1, 0, 1], [1, 1, 0], [0.3, 0.3, 0.3]]
    assert knee_point(front) == 3
    assert knee_point([[5.0, 2.0]]) == 0
    with pytest.raises(ValueError):
        knee_point(np.empty((0, 2)))


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="NaN"):
        non_dominated_sort([[1.0, np.nan]])
    with pytest.raises(ValueError, match="direction"):
        to_minimization([[1.0, 2.0]], ["minimise", "maximize"])
    with pytest.raises(ValueError, match="2 objectives"):
        pareto_mask([[1.0, 2.0]], ["minimize"])


ACC_LAT_MACS = (
    Objective("accuracy", "maximize"),
    Objective("latency_ms", "minimize"),
    Objective("macs", "minimize"),
)


def test_the_knee_is_taken_over_the_members_that_stay_on_the_front():
    in_search = pd.DataFrame(
        {
            "status": "complete",
            "accuracy": [0.1, 0.65, 0.32, 0.67],
            "latency_ms": [0.49, 0.99, 0.88, 0.14],
            "macs": [0.79, 0.56, 0.06, 0.97],
        }
    )
    ranked = rank_trials(in_search, ACC_LAT_MACS)
    assert ranked["on_front"].all()
    # the final figures: row 0 is slower, so row 1 now dominates it
    shown = in_search.assign(latency_ms=[1.2, 0.99, 0.88, 0.14])
    out, left = confirm_front(shown, ranked, ACC_LAT_MACS)
    assert list(left.index) == [0]
    assert out["on_front"].tolist() == [False, True, True, True]
    assert out["rank"].tolist() == [1, 0, 0, 0]
    assert out["latency_ms"].tolist() == [1.2, 0.99, 0.88, 0.14]  # the figures shown
    # over all four the knee would be row 2; over the three that stay it is row 3
    dirs = [o.direction for o in ACC_LAT_MACS]
    assert knee_point(shown[["accuracy", "latency_ms", "macs"]].to_numpy(), dirs) == 2
    assert out["knee"].tolist() == [False, False, False, True]


def test_rows_with_a_non_finite_objective_are_not_ranked():
    objectives = (Objective("accuracy", "maximize"), Objective("throughput_ips", "maximize"))
    df = pd.DataFrame(
        {
            "status": ["complete"] * 5 + ["failed"],
            "accuracy": [0.9, 0.5, 0.95, 0.99, np.nan, 0.99],
            "throughput_ips": [100.0, 300.0, np.inf, -np.inf, 500.0, 900.0],
        }
    )
    ranked = rank_trials(df, objectives)
    # infinite throughput would dominate everything; NaN and failed rows have no place either
    assert list(ranked.index) == [0, 1]
    assert ranked["on_front"].all() and ranked["knee"].sum() == 1
