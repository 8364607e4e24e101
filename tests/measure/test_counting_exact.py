"""Closed-form params and MACs against built models, fvcore and torch's FlopCounterMode."""

from __future__ import annotations

import random

import pytest
import torch

from fcasearch.measure.counting import cost_breakdown, count_macs, count_params
from fcasearch.measure.flops import count_flops_fvcore, count_macs_torch
from fcasearch.models import get_spec
from fcasearch.spec import CONV, FCA, ArchSpec, StageSpec

build_model = pytest.importorskip("fcasearch.models.fcaformer").build_model

N_SPECS = 60


def random_spec(rng: random.Random, max_width: int = 48, max_depth: int = 3) -> ArchSpec:
    """A random valid spec drawn over StageSpec fields directly (small widths, 32-64 px)."""
    n_stages = rng.randint(1, 4)
    n_conv = rng.randint(0, n_stages)
    stages = []
    for i in range(n_stages):
        heads = rng.choice([1, 2, 4])
        width = heads * 2 * rng.randint(1, max_width // (2 * heads))
        depth = rng.randint(1, max_depth)
        mlp_ratio = rng.choice([1.0, 2.0, 2.5, 4.0])
        if i < n_conv:
            stages.append(StageSpec(CONV, depth, width, mlp_ratio=mlp_ratio))
            continue
        subset = tuple(j for j in range(depth - 1) if rng.random() < 0.5)
        stages.append(
            StageSpec(
                FCA,
                depth,
                width,
                heads,
                mlp_ratio=mlp_ratio,
                merge_stride=rng.randint(1, 4),
                cross_window=rng.choice([None, 1, 2, 12]),
                tme=rng.choice(["all_but_last", "none", "every:2", subset]),
                enhancement=rng.random() < 0.8,
                scale_factors=rng.random() < 0.7,
                cross_bias=rng.random() < 0.7,
            )
        )
    mult = 2 ** (n_stages + 1)
    side = max(mult, rng.choice([32, 64]))
    img = (side, side) if rng.random() < 0.8 else (side, max(mult, side // 2))
    return ArchSpec(
        tuple(stages), img_size=img, in_chans=rng.choice([1, 3]), num_classes=rng.choice([10, 37])
    )


def random_specs(n: int = N_SPECS, seed: int = 0) -> list[ArchSpec]:
    rng = random.Random(seed)
    return [random_spec(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def specs() -> list[ArchSpec]:
    return random_specs()


def test_random_specs_cover_the_options(specs):
    assert len({s.arch_id for s in specs}) == N_SPECS
    assert any(s.num_conv_stages == 0 for s in specs)
    assert any(s.num_conv_stages == len(s.stages) for s in specs)
    assert any(
        s.cross_tokens(i, b)
        for s in specs
        for i in range(len(s.stages))
        for b in range(s.stages[i].depth)
    )
    assert any(s.img_size[0] != s.img_size[1] for s in specs)


def test_closed_form_params_equal_built_params(specs):
    for spec in specs:
        model = build_model(spec)
        assert count_params(spec) == sum(p.numel() for p in model.parameters()), spec.short()


def test_closed_form_macs_equal_fvcore_count(specs):
    for spec in specs:
        model = build_model(spec).eval()
        report = count_flops_fvcore(model, torch.randn(1, spec.in_chans, *spec.img_size))
        assert report.core_macs == count_macs(spec), spec.short()
        assert report.by_operator.get("scaled_dot_product_attention", 0) > 0 or not any(
            st.kind == FCA for st in spec.stages
        )
        assert report.total_macs > report.core_macs  # norms are in fvcore's total only
        assert "aten::scaled_dot_product_attention" not in report.uncounted


def test_closed_form_macs_equal_flop_counter_mode_on_meta(specs):
    for spec in specs:
        with torch.device("meta"):
            model = build_model(spec).eval()
        x = torch.empty(1, spec.in_chans, *spec.img_size, device="meta")
        assert count_macs_torch(model, x) == count_macs(spec), spec.short()


def test_fvcore_counts_scale_with_batch():
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=10)
    model = build_model(spec).eval()
    report = count_flops_fvcore(model, torch.randn(3, 3, 32, 32))
    assert report.core_macs == 3 * count_macs(spec)


PAPER = {
    "fcaformer_l1": (6_187_560, 1_374_297_280),
    "fcaformer_l2": (16_275_870, 3_602_233_760),
    "fcaformer_l3": (27_894_484, 6_650_569_984),
    "fcaformer_l4": (65_638_204, 14_491_790_848),
}


def _query_savings(spec: ArchSpec) -> int:
    """Sum over fca blocks of M * d^2: the cross-token queries the reference computes."""
    total = 0
    for s, st in enumerate(spec.stages):
        if st.kind == FCA:
            total += sum(spec.cross_tokens(s, b) * st.width**2 for b in range(st.depth))
    return total


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_models_on_meta_device(name):
    params, ref_macs = PAPER[name]
    spec = get_spec(name)
    with torch.device("meta"):
        model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == params == count_params(spec)
    assert count_macs(spec, reference=True) == ref_macs
    assert count_macs(spec) == ref_macs - _query_savings(spec)
    x = torch.empty(1, 3, 224, 224, device="meta")
    assert count_macs_torch(model, x) == count_macs(spec)


def test_l1_executed_macs_relation_to_reference():
    spec = get_spec("fcaformer_l1")
    # ours skips M*d^2 per block with cross input: 9,256,960 MACs (0.67%) less than the reference
    assert count_macs(spec) == 1_365_040_320
    assert 1_374_297_280 - count_macs(spec) == _query_savings(spec) == 9_256_960


def test_breakdown_sums_and_l1_pieces():
    spec = get_spec("fcaformer_l1")
    rows = {r.name: r for r in cost_breakdown(spec)}
    assert rows["stem"].params == 19_488
    assert rows["stage2.block0"].params == 458_328
    assert rows["stage3.block1"].params == 1_238_934
    assert rows["head"].params == 321_640
    assert sum(r.params for r in rows.values()) == count_params(spec)


def test_torch_counter_counts_a_fused_model():
    from fcasearch.models import calibrate_batchnorm, fuse_for_inference

    spec = get_spec("fcaformer_tiny", img_size=128, num_classes=10)
    model = fuse_for_inference(calibrate_batchnorm(build_model(spec)))
    x = torch.randn(2, 3, 128, 128)
    assert count_macs_torch(model, x) == 2 * count_macs(spec)
