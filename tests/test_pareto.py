"""fcasearch.pareto: the layer over moocore, and a run's hypervolume definition."""

from __future__ import annotations

import itertools

import moocore
import numpy as np
import pytest

from fcasearch.pareto import (
    HypervolumeDefinition,
    HypervolumeError,
    attainment_surfaces,
    common_definition,
    define_hypervolume,
    hv_contributions,
    hypervolume,
    hypervolume_history,
    non_dominated_sort,
    pareto_mask,
    parse_hv_reference,
)

# point sets stored with moocore: several runs' fronts in 2 and 3 objectives
STORED = ["input1.dat", "spherical-250-10-3d.txt.xz", "uniform-250-10-3d.txt.xz"]


def _stored_sets(name: str) -> list[np.ndarray]:
    data = moocore.get_dataset(name)
    return [data[data[:, -1] == s, :-1] for s in np.unique(data[:, -1])]


@pytest.mark.parametrize("name", STORED)
def test_equal_to_moocore_on_stored_fronts(name):
    sets = _stored_sets(name)
    everything = np.vstack(sets)
    ref = everything.max(axis=0) * 1.01 + 0.01
    for pts in sets:
        assert hypervolume(pts, ref) == moocore.hypervolume(pts, ref=ref)
        assert (pareto_mask(pts) == moocore.is_nondominated(pts, keep_weakly=True)).all()
        assert (non_dominated_sort(pts) == moocore.pareto_rank(pts)).all()
        expected = moocore.hv_contributions(pts, ref=ref, ignore_dominated=False)
        assert np.allclose(hv_contributions(pts, ref), expected)
    # a reference inside the cloud: points beyond it count nothing, in moocore as here
    mid = np.median(everything, axis=0)
    inside = sets[0][(sets[0] < mid).all(axis=1)]
    assert hypervolume(sets[0], mid) == pytest.approx(moocore.hypervolume(inside, ref=mid))


def test_hand_computed_values_of_the_old_implementation():
    # the values the hand-written code gave (and a hand computation agrees with)
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [2, 2, 2]) == pytest.approx(7.0)
    assert hypervolume([[0, 0, 1], [1, 1, 0]], [2, 2, 2]) == pytest.approx(5.0)
    assert hypervolume([[0, 0, 0, 0]], [1, 2, 3, 4]) == pytest.approx(24.0)
    assert non_dominated_sort([[1, 2], [2, 1], [2, 2], [2, 2]]).tolist() == [0, 0, 1, 1]
    assert pareto_mask([[1, 1], [1, 1], [2, 0]]).tolist() == [True, True, True]  # duplicates kept


def test_contributions_are_what_removing_a_point_costs():
    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(size=(12, 3)))
    pts = 1 - x / np.linalg.norm(x, axis=1, keepdims=True)  # mutually non-dominated
    ref = np.full(3, 1.0)
    total = hypervolume(pts, ref)
    for i, c in enumerate(hv_contributions(pts, ref)):
        assert c == pytest.approx(total - hypervolume(np.delete(pts, i, axis=0), ref), abs=1e-12)
    with_dominated = np.vstack([pts, pts[0] + 0.01])
    assert hv_contributions(with_dominated, ref)[-1] == 0.0
    assert hv_contributions([[2.0, 0.5]], [1.0, 1.0]).tolist() == [0.0]  # beyond the reference
    assert hv_contributions([[3.0], [1.0], [2.0], [1.0]], [4.0]).tolist() == [0, 0, 0, 0]
    assert hv_contributions([[3.0], [1.0], [2.0]], [4.0]).tolist() == [0, 1, 0]
    assert hv_contributions([[1.5], [5.0]], [4.0]).tolist() == [2.5, 0]


def test_contributions_count_the_dominated_points_a_removal_uncovers():
    # a Pareto set over three objectives, its hypervolume over two: [2, 2] is dominated there,
    # and removing [1, 1] uncovers it; the contribution is what removing the point costs with
    # every other point present (moocore's default ignored [2, 2]: 4 - 0, not 4 - 1)
    ref = np.array([3.0, 3.0])
    assert hv_contributions([[1.0, 1.0], [2.0, 2.0]], ref).tolist() == pytest.approx([3.0, 0.0])
    rng = np.random.default_rng(3)
    for n_obj in (2, 3, 4):
        pts = rng.random((25, n_obj))  # dominated points and all
        ref = np.full(n_obj, 1.05)
        total = hypervolume(pts, ref)
        removed = [total - hypervolume(np.delete(pts, i, axis=0), ref) for i in range(len(pts))]
        assert hv_contributions(pts, ref) == pytest.approx(removed, abs=1e-12)


def test_history_never_falls_and_ends_at_the_whole_value():
    rng = np.random.default_rng(2)
    pts = rng.random((40, 3)) * 1.2  # some beyond the reference
    pts[5] = np.nan
    hist = hypervolume_history(pts, np.ones(3))
    assert (np.diff(hist) >= 0).all()
    ok = np.isfinite(pts).all(axis=1)
    assert hist[-1] == pytest.approx(hypervolume(pts[ok], np.ones(3)))


def test_attainment_surfaces_of_three_seeds():
    # three runs (minimized); 2 of 3 needed for the median
    runs = {0: [[1, 3], [2, 2], [3, 1]], 1: [[1.5, 2.5], [2.5, 1.5]], 2: [[2, 3]]}
    pts = np.array([p for r in runs.values() for p in r], dtype=float)
    sets = [r for r, ps in runs.items() for _ in ps]
    s = attainment_surfaces(pts, sets, (25, 50, 75))
    assert s[25.0].tolist() == [[1, 3], [1.5, 2.5], [2, 2], [2.5, 1.5], [3, 1]]
    assert s[50.0].tolist() == [[1.5, 3], [2, 2.5], [2.5, 2], [3, 1.5]]
    assert s[75.0].tolist() == [[2, 3]]
    # a maximized objective: the same surfaces, that column negated back
    flipped = attainment_surfaces(pts * [-1, 1], sets, (50,), ["maximize", "minimize"])
    assert sorted(map(tuple, flipped[50.0] * [-1, 1])) == sorted(map(tuple, s[50.0]))


def _brute_median_attained(pts, sets, q):
    """Whether q is weakly dominated by points of at least half of the sets."""
    hits = {s for p, s in zip(pts, sets) if (p <= q).all()}
    return len(hits) >= 2


def test_median_surface_agrees_with_a_grid_count():
    rng = np.random.default_rng(3)
    pts = rng.integers(0, 6, (18, 2)).astype(float)
    sets = np.repeat([0, 1, 2], 6)
    surface = attainment_surfaces(pts, sets, (50,))[50.0]
    for q in itertools.product(np.arange(0, 7, 0.5), repeat=2):
        q = np.array(q)
        on = bool(len(surface)) and bool((surface <= q).all(axis=1).any())
        assert on == _brute_median_attained(pts, sets, q), q


# --------------------------------------------------------------------------- definitions

ACC_MACS_LAT = [("accuracy", "maximize"), ("macs", "minimize"), ("latency_ms", "minimize")]


def test_rules_pick_constraints_space_maxima_and_leave_out_the_rest():
    d = define_hypervolume(
        ACC_MACS_LAT,
        constraints={"max_params": 1e5},
        space_maximum=lambda metric: ({"macs": 2_000_000}[metric], "exact, over 4"),
    )
    bounds = {o.name: (o.best, o.reference) for o in d.objectives}
    assert bounds == {"accuracy": (1.0, 0.0), "macs": (0.0, 2e6), "latency_ms": (0.0, None)}
    assert d.names == ("accuracy", "macs")
    assert "max_latency_ms" in d.excluded[0].source and "latency_ms=REF" in d.excluded[0].source
    # scaled coordinates: accuracy 0.75 -> 0.25, 1M MACs -> 0.5; hypervolume (1 - .25) * (1 - .5)
    assert d.value([[0.75, 1e6]]) == pytest.approx(0.375)
    assert d.value([[0.75, 3e6]]) == 0.0  # beyond the reference: nothing
    given = define_hypervolume(
        ACC_MACS_LAT, constraints={"max_macs": 5e6}, given={"latency_ms": (50.0, None)}
    )
    assert given.names == ("accuracy", "macs", "latency_ms")
    assert [o.source for o in given.objectives][1:] == [
        "constraint max_macs",
        "--hv-reference latency_ms=50",
    ]


def test_user_values_are_checked():
    assert parse_hv_reference(["latency_ms=50", "throughput_ips=0:5000"]) == {
        "latency_ms": (50.0, None),
        "throughput_ips": (0.0, 5000.0),
    }
    assert parse_hv_reference({"peak_mem_mb": "2_000"}) == {"peak_mem_mb": (2000.0, None)}
    with pytest.raises(HypervolumeError, match="NAME=VALUE"):
        parse_hv_reference(["latency_ms"])
    with pytest.raises(HypervolumeError, match="give a number"):
        parse_hv_reference(["latency_ms=fast"])
    with pytest.raises(HypervolumeError, match="not an objective"):
        define_hypervolume(ACC_MACS_LAT, given={"peak_mem_mb": (10.0, None)})
    with pytest.raises(HypervolumeError, match="must lie above the best value"):
        define_hypervolume(ACC_MACS_LAT, given={"latency_ms": (-1.0, None)})
    with pytest.raises(HypervolumeError, match="REF:BEST"):
        define_hypervolume([("throughput_ips", "maximize")], given={"throughput_ips": (0.0, None)})
    ok = define_hypervolume(
        [("throughput_ips", "maximize")], given={"throughput_ips": (0.0, 500.0)}
    )
    assert ok.value([[250.0]]) == pytest.approx(0.5)


def test_round_trip_identity_and_common_definitions():
    a = define_hypervolume(ACC_MACS_LAT, constraints={"max_macs": 5e6, "max_latency_ms": 20})
    back = HypervolumeDefinition.from_dict(a.to_dict())
    assert back == a and back.id == a.id
    assert common_definition([a, back]) is a  # same definition: each run keeps its own value
    b = define_hypervolume(
        ACC_MACS_LAT, constraints={"max_macs": 9e6}, given={"latency_ms": (10.0, None)}
    )
    c = common_definition([a, b])
    assert {o.name: o.reference for o in c.objectives} == {
        "accuracy": 0.0,
        "macs": 9e6,
        "latency_ms": 20,
    }
    assert a.id in c.note and b.id in c.note and c.id not in (a.id, b.id)
    with pytest.raises(HypervolumeError, match="not a hypervolume definition"):
        HypervolumeDefinition.from_dict({"objectives": [{"direction": "minimize"}]})


def test_common_definition_takes_the_best_of_the_best_values():
    # maximized: the larger best value of the runs
    objectives = [("accuracy", "maximize"), ("throughput_ips", "maximize")]
    low = define_hypervolume(objectives, given={"throughput_ips": (0.0, 5000.0)})
    high = define_hypervolume(objectives, given={"throughput_ips": (0.0, 8000.0)})
    for pair in ([low, high], [high, low]):
        merged = {o.name: (o.best, o.reference) for o in common_definition(pair).objectives}
        assert merged == {"accuracy": (1.0, 0.0), "throughput_ips": (8000.0, 0.0)}
    # minimized: the smaller best value, the larger reference
    objectives = [("accuracy", "maximize"), ("latency_ms", "minimize")]
    one = define_hypervolume(objectives, given={"latency_ms": (50.0, 1.0)})
    two = define_hypervolume(objectives, given={"latency_ms": (60.0, 2.0)})
    for pair in ([one, two], [two, one]):
        merged = {o.name: (o.best, o.reference) for o in common_definition(pair).objectives}
        assert merged == {"accuracy": (1.0, 0.0), "latency_ms": (1.0, 60.0)}
