"""Sampling: through Optuna (random, TPE, NSGA-II) and an rng; membership, replay, mutation."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import optuna
import pytest
import torch

from fcasearch.measure.counting import count_macs, count_params
from fcasearch.models import build_model, get_spec
from fcasearch.space import SpaceError, load_space
from fcasearch.spec import FCA, ArchSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

SHIPPED = ["micro", "fcaformer_imagenet", "mobile"]
# All 500 samples are checked for membership and constraints. All 500 micro samples are built as
# real CPU models; the first 150 of the 224-px spaces are built on the meta device (about 50 ms a
# model on 2 cores; the closed-form counts are also checked against 60 random specs of every stage
# kind in tests/measure/test_counting_exact.py).
BUILD_COUNT = {"micro": 500, "mobile": 150, "fcaformer_imagenet": 150}


@pytest.fixture(scope="module")
def spaces():
    return {name: load_space(name) for name in SHIPPED}


@pytest.mark.parametrize("name", SHIPPED)
def test_500_samples_are_valid_members_that_meet_the_constraints_and_the_first_build(spaces, name):
    space = spaces[name]
    rng = np.random.default_rng(0)
    specs = [space.sample_feasible(rng) for _ in range(500)]
    for spec in specs:
        assert spec == spec.canonical()
        assert space.contains(spec), space.why_not(spec)
        assert not space.constraints.check_closed_form(spec)
        assert (spec.in_chans, spec.num_classes) == (space.in_chans, space.num_classes)
        assert spec.img_size[0] in space.img_sizes
    assert len({s.arch_id for s in specs}) > 400  # these spaces are large: nearly all distinct
    for spec in specs[: BUILD_COUNT[name]]:
        if name == "micro":
            model = build_model(spec)  # tiny: a real CPU model
        else:
            with torch.device("meta"):
                model = build_model(spec)
        assert sum(p.numel() for p in model.parameters()) == count_params(spec), spec.short()


def test_a_micro_member_runs_forward():
    space = load_space("micro")
    spec = space.sample(np.random.default_rng(3))
    out = build_model(spec).eval()(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("name", SHIPPED)
def test_sampling_is_deterministic_under_a_seed(spaces, name):
    space = spaces[name]
    a = [space.sample(np.random.default_rng(7)).arch_id for _ in range(3)]
    assert len(set(a)) == 1
    rng1, rng2 = np.random.default_rng(11), np.random.default_rng(11)
    assert [space.sample(rng1) for _ in range(20)] == [space.sample(rng2) for _ in range(20)]
    assert [space.sample_uniform(np.random.default_rng(5)) for _ in range(2)] == [
        space.sample_uniform(np.random.default_rng(5)) for _ in range(2)
    ]
    other = [space.sample(np.random.default_rng(12)) for _ in range(20)]
    assert other != [space.sample(np.random.default_rng(11)) for _ in range(20)]


@pytest.mark.parametrize(
    "sampler",
    [
        lambda: optuna.samplers.RandomSampler(seed=0),
        lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
        lambda: optuna.samplers.NSGAIISampler(seed=0, population_size=8),
    ],
    ids=["random", "tpe", "nsga2"],
)
def test_optuna_samplers_draw_members(sampler):
    space = load_space("mobile")
    multi = "NSGA" in type(sampler()).__name__
    study = optuna.create_study(
        sampler=sampler(), directions=["minimize", "minimize"] if multi else ["minimize"]
    )
    specs = {}

    def objective(trial):
        spec = space.sample(trial)
        specs[trial.number] = spec
        return (count_params(spec), count_macs(spec)) if multi else count_params(spec)

    study.optimize(objective, n_trials=24)
    for t in study.trials:
        spec = specs[t.number]
        assert space.contains(spec)
        assert space.from_params(t.params) == spec
        assert space.sample(t) == spec  # a FrozenTrial replays its parameters
        assert space.to_params(spec).keys() == t.params.keys()
        # conditional parameters: fca settings exist only for fca stages, cross settings only
        # for stages with emitters
        for i, st in enumerate(spec.stages):
            assert (f"s{i}.tme" in t.params) == (st.kind == FCA)
            assert (f"s{i}.merge_stride" in t.params) == bool(st.emitters)


@pytest.mark.parametrize("name", SHIPPED)
def test_flat_sampling_asks_every_parameter_in_every_trial(spaces, name):
    space = spaces[name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    everything = set(space.parameters())
    for _ in range(30):
        trial = study.ask()
        spec = space.sample(trial, flat=True)
        assert set(trial.params) == everything  # one fixed search space for NSGA-II / TPE
        assert space.contains(spec)
        assert space.from_params(trial.params) == spec  # unused values are ignored
        used = space.to_params(spec)
        assert space.from_params(used) == spec and used.keys() <= everything
        study.tell(trial, float(count_params(spec)))
    # the non-flat form of the same draws asks only what the architecture uses
    frozen = study.trials[0]
    assert space.sample(frozen, flat=True) == space.sample(frozen)


def test_parameter_names_are_stable_and_readable():
    space = load_space("fcaformer_imagenet")
    names = list(space.parameters())
    assert names[:2] == ["conv_stages", "s0.depth"]
    for expected in (
        "s2.depth",
        "s2.width",
        "s2.tme",
        "s2.merge_stride",
        "s2.cross_window",
        "s3.tme",
    ):
        assert expected in names
    assert "s2.head_dim" not in names  # fixed (32): no parameter
    for shared in ("enhancement", "scale_factors", "cross_bias"):  # shared: one parameter each
        assert shared in names and f"s2.{shared}" not in names


def test_explicit_tme_is_a_string_to_optuna():
    space = load_space("mobile")
    l1 = get_spec("fcaformer_l1")
    spec = dataclasses.replace(
        l1, stages=(*l1.stages[:2], dataclasses.replace(l1.stages[2], tme=(0, 2)), l1.stages[3])
    )
    params = space.to_params(spec)
    assert params["s2.tme"] == "[0,2]"
    assert space.from_params(params) == spec.canonical()
    assert (0, 2) in space.parameters()["s2.tme"].values


@pytest.mark.parametrize("model", ["fcaformer_l1", "fcaformer_l2", "fcaformer_l3", "fcaformer_l4"])
def test_paper_models_enqueue_as_trials(model):
    space = load_space("fcaformer_imagenet")
    spec = get_spec(model)
    study = optuna.create_study(sampler=optuna.samplers.NSGAIISampler(seed=0))
    study.enqueue_trial(space.to_params(spec))
    trial = study.ask()
    assert space.sample(trial) == spec.canonical()
    assert space.sample(trial).arch_id == spec.arch_id


def test_canonical_equivalents_are_members_and_share_parameters():
    space = load_space("fcaformer_imagenet")
    a = get_spec("fcaformer_l1", cross_window=12)
    b = get_spec("fcaformer_l1", cross_window=None)  # unlimited: the same network at depth 6
    c = get_spec("fcaformer_l1", cross_window=4)  # a different network
    assert space.contains(a) and space.contains(b) and space.contains(c)
    assert space.to_params(a) == space.to_params(b) != space.to_params(c)


def test_non_members_say_why():
    space = load_space("micro")
    outside = [
        (get_spec("fcaformer_nano", img_size=64, in_chans=1, num_classes=10), "img_size"),
        (get_spec("fcaformer_nano", img_size=32, in_chans=3, num_classes=10), "in_chans"),
        (
            get_spec("fcaformer_tiny", img_size=32, in_chans=1, num_classes=10),
            "s2.head_dim: 32 (width 32 / heads 1)",
        ),
        (
            ArchSpec.hybrid(
                (1, 1, 2, 1), (24, 16, 16, 32), (2, 4), img_size=32, in_chans=1, num_classes=10
            ),
            "s0.width",
        ),
        (
            ArchSpec.hybrid(
                (1, 1, 2, 1),
                (8, 16, 16, 32),
                (4,),
                conv_stages=3,
                img_size=32,
                in_chans=1,
                num_classes=10,
            ),
            "conv_stages",
        ),
    ]
    for spec, key in outside:
        assert not space.contains(spec)
        assert space.why_not(spec).startswith(key), space.why_not(spec)
        with pytest.raises(
            SpaceError, match=f"^micro.yaml: not a member of this space: {re.escape(key)}"
        ):
            space.to_params(spec)
    inside = ArchSpec.hybrid(
        (1, 1, 2, 1),
        (8, 16, 16, 32),
        (2, 4),
        img_size=32,
        in_chans=1,
        num_classes=10,
        mlp_ratio=2.0,
        merge_stride=2,
    )
    assert space.contains(inside), space.why_not(inside)
    assert space.why_not(inside) == ""


def test_shared_values_are_one_value_for_all_stages():
    space = load_space("micro")  # share: [merge_stride]
    rng = np.random.default_rng(0)
    for _ in range(200):
        spec = space.sample(rng)
        strides = {st.merge_stride for st in spec.stages if st.emitters}
        assert len(strides) <= 1
    # two emitting stages with different strides are not members
    same = ArchSpec.hybrid(
        (1, 1, 3, 2),
        (16, 16, 16, 32),
        (2, 4),
        img_size=32,
        in_chans=1,
        num_classes=10,
        mlp_ratio=2.0,
        cross_window=1,
        merge_stride=2,
    )
    assert space.contains(same)
    stages = list(same.stages)
    stages[3] = dataclasses.replace(stages[3], merge_stride=4)
    mixed = dataclasses.replace(same, stages=tuple(stages))
    assert not space.contains(mixed)
    assert "merge_stride: is shared" in space.why_not(mixed)


@pytest.mark.parametrize("name", SHIPPED)
def test_mutate_changes_one_choice_into_another_member(spaces, name):
    space = spaces[name]
    rng = np.random.default_rng(1)
    spec = space.sample(rng)
    for _ in range(40):
        child = space.mutate(spec, rng)
        assert child != spec and space.contains(child)
        spec = child


def test_mutate_changes_exactly_one_parameter_where_nothing_is_conditional():
    data = {
        "img_size": 32,
        "num_classes": 10,
        "in_chans": 1,
        "conv_stages": 2,
        "defaults": {
            "head_dim": 8,
            "mlp_ratio": [2, 3, 4],
            "merge_stride": [2, 4],
            "cross_window": None,
            "enhancement": [True, False],
        },
        "stages": [
            {"depth": [1, 2], "width": [8, 16]},
            {"depth": [1, 2], "width": [16, 24]},
            {"depth": [2, 3], "width": [16, 32]},
            {"depth": [2, 3], "width": [32, 48]},
        ],
    }
    space = load_space(data)
    rng = np.random.default_rng(2)
    spec = space.sample(rng)
    for _ in range(100):
        child = space.mutate(spec, rng)
        before, after = space.to_params(spec), space.to_params(child)
        assert before.keys() == after.keys()
        assert sum(before[k] != after[k] for k in before) == 1
        spec = child


def test_mutate_of_a_single_member_space_is_an_error():
    data = {
        "img_size": 32,
        "num_classes": 2,
        "conv_stages": 1,
        "stages": [{"depth": 1, "width": 8}] * 2,
        "defaults": {"head_dim": 8, "cross_window": [3, 4]},
    }
    space = load_space(data)
    spec = space.sample(np.random.default_rng(0))
    assert space.cardinality() == 1
    with pytest.raises(SpaceError, match="no single change"):
        space.mutate(spec, np.random.default_rng(0))


def test_sample_rejects_what_is_not_a_trial_or_generator():
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        load_space("micro").sample(42)


def test_sample_feasible_gives_up_with_a_clear_error():
    data = load_space("micro").to_dict()
    data["constraints"] = {"max_params": 10}
    space = load_space(data)
    with pytest.raises(SpaceError, match="no architecture met the constraints in 20 draws"):
        space.sample_feasible(np.random.default_rng(0), max_tries=20)


def test_a_search_asks_only_the_parameters_that_apply():
    """Define-by-run: a trial whose stage 1 is a conv stage has no s1.tme, s1.enhancement or
    s1.cross_window; cross settings appear only with emitters. Enqueued (resumed) parameters
    replay the same network with the same parameters, and to_params/from_params round-trip."""
    from fcasearch.search.study import sample_architecture

    space = load_space("micro")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen_conv = seen_fca = False
    for _ in range(40):
        trial = study.ask()
        spec = sample_architecture(trial, space)
        params = trial.params
        if spec.stages[1].kind == FCA:
            seen_fca = True
            assert {"s1.tme", "s1.enhancement"} <= params.keys()
        else:
            seen_conv = True
            assert not {"s1.tme", "s1.enhancement", "s1.cross_window"} & params.keys()
        for i, st in enumerate(spec.stages):
            assert (f"s{i}.cross_window" in params) == bool(st.kind == FCA and st.emitters)
        # the same names as to_params (values may differ where they build the same network:
        # at depth 1, tme "none" and "all_but_last" both emit nothing)
        assert params.keys() == space.to_params(spec).keys()
        assert space.from_params(params) == spec == space.from_params(space.to_params(spec))
        # the distributions a trial suggests are the space's
        dists = space.distributions()
        frozen = study.get_trials(deepcopy=False)[-1]
        assert all(dists[k] == d for k, d in frozen.distributions.items())
        study.tell(trial, float(count_params(spec)))
    assert seen_conv and seen_fca
    # a retried (enqueued) trial asks the same parameters and builds the same network
    for t in study.trials[:10]:
        study.enqueue_trial(t.params)
        again = study.ask()
        assert sample_architecture(again, space) == space.from_params(t.params)
        assert again.params == t.params
        study.tell(again, 0.0)
