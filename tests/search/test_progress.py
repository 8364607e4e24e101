from __future__ import annotations

import math

import pytest

from fcasearch.search.options import parse_objectives
from fcasearch.search.progress import front_hypervolume


def test_front_hypervolume_normalizes_over_the_rows_and_skips_incomplete_ones():
    rows = [
        {"status": "complete", "accuracy": a, "macs": m}
        for a, m in [(0.9, 10), (0.95, 20), (0.8, 5), (0.85, 30)]
    ] + [
        {"status": "failed", "accuracy": 0.99, "macs": 1},
        {"status": "complete", "accuracy": math.nan, "macs": 1},
    ]
    size, hv = front_hypervolume(rows, parse_objectives("accuracy:max macs:min"))
    # normalized front (0, .6), (1/3, .2), (1, 0); reference (1.1, 1.1)
    expected = (1 / 3) * 0.5 + (2 / 3) * 0.9 + 0.1 * 1.1
    assert size == 3 and hv == pytest.approx(expected)


def test_front_hypervolume_of_nothing():
    assert front_hypervolume([], parse_objectives("macs")) == (0, 0.0)
