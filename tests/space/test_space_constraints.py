"""Constraints: closed-form limits before building, measured limits after."""

from __future__ import annotations

import math

import pytest

from fcasearch.measure.counting import count_macs, count_params
from fcasearch.models import get_spec
from fcasearch.space import Constraints, SpaceError, load_space


def test_closed_form_limits_use_the_counting_module():
    l1 = get_spec("fcaformer_l1")
    params, macs = count_params(l1), count_macs(l1)
    assert Constraints(max_params=params, max_macs=macs).check_closed_form(l1) == []
    out = Constraints(max_params=params - 1, max_macs=macs - 1).check_closed_form(l1)
    assert out == [
        f"params {params:,} > max_params {params - 1:,}",
        f"macs {macs:,} > max_macs {macs - 1:,}",
    ]
    assert Constraints().check_closed_form(l1) == []


def test_measured_limits():
    cons = Constraints(
        max_latency_ms=10.0, max_memory_mb=100.0, device="cuda", latency_batch_size=8
    )
    assert cons.has_measured and not cons.has_closed_form
    assert cons.check_measured({"latency_ms": 9.5, "peak_mem_mb": 100.0}) == []
    over = cons.check_measured({"latency_ms": 12.25, "peak_mem_mb": 50.0})
    assert over == ["latency_ms 12.25 ms > max_latency_ms 10 ms (on cuda, batch 8)"]
    missing = cons.check_measured({"latency_ms": math.nan})
    assert len(missing) == 2 and all("was not measured" in m for m in missing)
    assert Constraints().check_measured({}) == []


def test_excess_is_what_optuna_set_constraint_wants():
    l1 = get_spec("fcaformer_l1")
    params = count_params(l1)
    cons = Constraints(max_params=params * 2, max_latency_ms=10.0)
    excess = cons.excess(l1, {"latency_ms": 15.0})
    assert excess == pytest.approx({"max_params": -0.5, "max_latency_ms": 0.5})
    assert cons.excess() == {}


def test_constraints_round_trip_and_reject_bad_values():
    cons = Constraints(max_params=10, max_macs=20, max_latency_ms=1.5, device="cuda:1")
    assert Constraints.from_dict(cons.to_dict()) == cons
    assert Constraints.from_dict(None) == Constraints()
    with pytest.raises(
        SpaceError, match=r"^s\.yaml: constraints\.max_macs: 0 must be a positive number"
    ):
        Constraints.from_dict({"max_macs": 0}, source="s.yaml")
    with pytest.raises(SpaceError, match=r"constraints\.max_params: 1\.5 must be a whole number"):
        Constraints.from_dict({"max_params": 1.5})
    with pytest.raises(SpaceError, match=r"constraints\.max_latency_ms: 'fast' is not a number"):
        Constraints.from_dict({"max_latency_ms": "fast"})
    with pytest.raises(
        SpaceError, match=r"constraints\.latency_batch_size: 0 must be an integer >= 1"
    ):
        Constraints(latency_batch_size=0)
    with pytest.raises(SpaceError, match=r"did you mean 'max_latency_ms'"):
        Constraints.from_dict({"max_latency": 3})


def test_a_space_with_measured_limits_on_a_named_device():
    data = load_space("micro").to_dict()
    data["constraints"] = {
        "max_params": 50_000,
        "max_latency_ms": 5,
        "max_memory_mb": 64,
        "device": "cuda",
    }
    space = load_space(data)
    cons = space.constraints
    assert (cons.device, cons.max_latency_ms, cons.max_memory_mb) == ("cuda", 5, 64)
    assert cons.has_closed_form and cons.has_measured
    fraction, count = space.estimate_feasible(n=500)
    assert 0 < fraction < 1 and 0 < count < space.cardinality()
