"""The closed-form maximum of a space: exact when enumerated, a sound bound otherwise."""

from __future__ import annotations

import pytest

from fcasearch.measure.counting import count_macs, count_params
from fcasearch.space import bounds, load_space
from fcasearch.space.bounds import closed_form_maximum, space_hypervolume

# 6,656 architectures: enumerable, and with every kind of setting the bound varies
SMALL = {
    "name": "small",
    "img_size": 32,
    "in_chans": 1,
    "num_classes": 10,
    "conv_stages": [1, 2],
    "defaults": {
        "mlp_ratio": [2, 4],
        "head_dim": 8,
        "tme": ["all_but_last", "none"],
        "enhancement": [True, False],
        "merge_stride": [2, 4],
        "cross_window": [1, None],
    },
    "share": ["merge_stride"],
    "stages": [
        {"depth": 1, "width": 8},
        {"depth": [1, 2], "width": 16},
        {"depth": [1, 3], "width": [16, 32]},
        {"depth": 1, "width": 32},
    ],
}


@pytest.mark.parametrize("metric", ["params", "macs"])
def test_exact_when_enumerated_and_a_close_sound_bound_otherwise(metric, monkeypatch):
    space = load_space(SMALL)
    count = count_params if metric == "params" else count_macs
    exact = max(count(s) for s in space.enumerate())
    monkeypatch.setattr(bounds, "EXACT_LIMIT", 10_000)
    value, how = closed_form_maximum(space, metric)
    assert value == exact and how.startswith("exact")
    monkeypatch.setattr(bounds, "EXACT_LIMIT", 0)
    bound, how = closed_form_maximum(space, metric)
    assert how.startswith("upper bound")
    assert exact <= bound <= 1.05 * exact


def test_shipped_spaces_get_bounds_quickly():
    for name in ("micro", "fcaformer_imagenet"):
        space = load_space(name)
        for metric in ("params", "macs"):
            value, how = closed_form_maximum(space, metric)
            assert value > 0 and "upper bound" in how


def test_space_definition_follows_the_constraints():
    space = load_space("mobile")  # max_params 8M and max_macs 2e9, no latency limit
    d = space_hypervolume(
        space, [("accuracy", "maximize"), ("macs", "minimize"), ("params", "minimize")]
    )
    assert {o.name: o.reference for o in d.objectives} == {
        "accuracy": 0.0,
        "macs": 2e9,
        "params": 8e6,
    }
    micro = space_hypervolume(
        load_space("micro"), [("macs", "minimize"), ("latency_ms", "minimize")], ["latency_ms=40"]
    )
    sources = [o.source for o in micro.objectives]
    assert (
        sources[0].startswith("space maximum: upper bound")
        and sources[1] == "--hv-reference latency_ms=40"
    )
