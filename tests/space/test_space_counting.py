"""Cardinality: exact counts of distinct networks, checked against brute-force enumeration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fcasearch.space import load_space

SMALL = {
    "img_size": [32, 64],
    "in_chans": 1,
    "num_classes": 3,
    "conv_stages": [1, 2],
    "defaults": {
        "mlp_ratio": 2,
        "head_dim": 4,
        "tme": ["all_but_last", "every:2", [0]],  # aliases: every:2 == all_but_last at depth 2
        "merge_stride": [2, 4],
        "cross_window": [1, None],  # aliases: 1 == unlimited with one emitter
        "scale_factors": [True, False],
        "enhancement": [True, False],
    },
    "share": ["merge_stride", "scale_factors"],
    "stages": [
        {"depth": 1, "width": 8},
        {"depth": [2, 3], "width": 8, "cross_window": [1, 2, None]},
        {"depth": {"low": 2, "high": 3}, "width": [8, 16], "tme": ["none", "every:2"]},
    ],
}


class _PathTrial:
    """A fake Optuna trial that takes the choice indices in ``path`` (0 past its end) and records
    how many options each suggestion had: enough to walk every raw parameter combination."""

    def __init__(self, path: list[int]):
        self.path, self.pos, self.options = path, 0, []

    def _take(self, n: int) -> int:
        if self.pos == len(self.path):
            self.path.append(0)
        self.options.append(n)
        self.pos += 1
        return self.path[self.pos - 1]

    def suggest_categorical(self, name, choices):
        return choices[self._take(len(choices))]

    def suggest_int(self, name, low, high, step=1):
        return low + step * self._take((high - low) // step + 1)


def _brute_force(space) -> tuple[int, set[str]]:
    """Every raw combination of conditional parameters, through ``space.sample(trial)``."""
    path: list[int] = []
    combos, ids = 0, set()
    while True:
        trial = _PathTrial(list(path))
        ids.add(space.sample(trial).arch_id)  # arch_id: hash of ArchSpec.canonical() (spec.py)
        combos += 1
        path, options = trial.path, trial.options
        while path and path[-1] + 1 >= options[len(path) - 1]:
            path.pop()
        if not path:
            return combos, ids
        path[-1] += 1


def test_cardinality_matches_brute_force_on_a_small_space():
    space = load_space(SMALL)
    combos, ids = _brute_force(space)
    assert combos == 7200  # raw parameter combinations ...
    assert space.cardinality() == len(ids) == 1184  # ... build 1184 distinct networks
    listed = list(space.enumerate())
    assert len(listed) == len({s.arch_id for s in listed}) == 1184
    assert {s.arch_id for s in listed} == ids
    assert all(space.contains(s) for s in listed)
    assert len(list(space.enumerate(limit=10))) == 10


def _random_space(rng: np.random.Generator) -> dict:
    """A small random space: random splits, sharing, aliases, explicit TME, heads or head_dim."""

    def pick(options, k_max=2):
        k = int(rng.integers(1, k_max + 1))
        return [
            options[i]
            for i in sorted(rng.choice(len(options), size=min(k, len(options)), replace=False))
        ]

    n = int(rng.integers(2, 4))
    depth_low = 3 if rng.random() < 0.3 else 1
    defaults = {
        "tme": pick(
            ["all_but_last", "none", "every:2", [0]]
            if depth_low == 3
            else ["all_but_last", "none", "every:2"]
        ),
        "merge_stride": pick([1, 2, 4]),
        "cross_window": pick([1, 2, None]),
        "scale_factors": pick([True, False]),
        "cross_bias": pick([True, False]),
        "enhancement": pick([True, False]),
        "mlp_ratio": pick([1, 2.0, 3]),
    }
    defaults["heads" if rng.random() < 0.5 else "head_dim"] = pick([1, 2])
    shareable = ["tme", "merge_stride", "cross_window", "scale_factors", "mlp_ratio", "enhancement"]
    share = [k for k in shareable if rng.random() < 0.3]
    conv_stages = pick(list(range(n + 1)))
    stages = []
    for i in range(n):
        stage = {
            "depth": {"low": depth_low, "high": depth_low + int(rng.integers(0, 2))},
            "width": pick([4, 8]),
        }
        if i >= min(conv_stages) and rng.random() < 0.3 and "cross_window" not in share:
            stage["cross_window"] = pick([1, 3, None])  # a stage's own choice over the default
        stages.append(stage)
    return {
        "img_size": 2 ** (n + 1),
        "num_classes": 2,
        "conv_stages": conv_stages,
        "defaults": defaults,
        "share": share,
        "stages": stages,
    }


@pytest.mark.parametrize("seed", range(12))
def test_cardinality_matches_brute_force_on_random_small_spaces(seed):
    rng = np.random.default_rng(seed)
    while True:
        data = _random_space(rng)
        space = load_space(data)
        bound = math.prod(len(c) for c in space.parameters().values())
        if bound <= 30_000:
            break
    _, ids = _brute_force(space)
    assert space.cardinality() == len(ids), data
    assert {s.arch_id for s in space.enumerate()} == ids


def test_cardinality_of_independent_choices_is_a_product():
    data = {
        "img_size": [32, 64, 96],
        "num_classes": 10,
        "conv_stages": 2,
        "defaults": {"head_dim": 8, "tme": "none"},  # no cross attention: nothing aliases
        "stages": [
            {"depth": [1, 2], "width": [8, 16]},
            {"depth": {"low": 1, "high": 3}, "width": [16]},
            {
                "depth": [2, 4],
                "width": {"low": 16, "high": 64, "step": 16},
                "enhancement": [True, False],
            },
            {"depth": 1, "width": [32, 48], "mlp_ratio": [2, 4]},
        ],
    }
    assert load_space(data).cardinality() == 3 * (2 * 2) * 3 * (2 * 4 * 2) * (2 * 2)


def test_shipped_cardinalities():
    assert load_space("micro").cardinality() == 774_144
    assert load_space("fcaformer_imagenet").cardinality() == 602_118_696_960
    assert load_space("mobile").cardinality() == 386_568_000


def test_uniform_sampling_covers_architectures_evenly():
    data = dict(SMALL, img_size=32, conv_stages=1)
    data["stages"] = [*SMALL["stages"][:2], dict(SMALL["stages"][2], width=8)]
    space = load_space(data)  # shared keys and aliases, 256 networks
    assert space.cardinality() == 256
    rng = np.random.default_rng(0)
    counts: dict[str, int] = {}
    for _ in range(30 * 256):
        spec = space.sample_uniform(rng)
        counts[spec.arch_id] = counts.get(spec.arch_id, 0) + 1
    assert len(counts) == 256
    # each count is Binomial(7680, 1/256): mean 30, sd ~5.5; about 4 sd either side, fixed seed
    assert 8 <= min(counts.values()) and max(counts.values()) <= 52
    # drawing raw parameters instead is not uniform over networks: aliases pile up
    raw: dict[str, int] = {}
    for _ in range(30 * 256):
        spec = space.sample(rng)
        raw[spec.arch_id] = raw.get(spec.arch_id, 0) + 1
    assert np.std(list(raw.values())) > 3 * np.std(list(counts.values()))


def test_estimate_feasible_is_exact_on_small_spaces_and_close_on_large_ones():
    data = dict(SMALL, constraints={"max_params": 8000})
    space = load_space(data)
    fraction, count = space.estimate_feasible(n=5000)
    exact = sum(not space.constraints.check_closed_form(s) for s in space.enumerate())
    assert count == exact and fraction == pytest.approx(exact / 1184)
    assert 0 < exact < 1184

    sampled, estimate = space.estimate_feasible(n=1000, rng=np.random.default_rng(0))  # 1184 > n
    assert abs(sampled - exact / 1184) < 0.06
    assert estimate == round(sampled * 1184)
    assert load_space(SMALL).estimate_feasible() == (1.0, 1184)  # no constraints
