"""build_model: exact parameter counts, shapes, gradients, spec validation, arch_id."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from fcasearch.measure.counting import count_params
from fcasearch.models import FcaFormer, build_model, get_spec
from fcasearch.models.layers import drop_path_rates
from fcasearch.spec import ArchSpec, SpecError, StageSpec


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(spec: ArchSpec) -> FcaFormer:
    with torch.device("meta"):
        return build_model(spec)


@pytest.mark.parametrize(
    ("name", "img", "expected"),
    [
        ("fcaformer_l1", 224, 6_187_560),
        ("fcaformer_l2", 224, 16_275_870),
        ("fcaformer_l3", 224, 27_894_484),
        ("fcaformer_l4", 224, 65_638_204),
        ("fcaformer_l1", 64, 6_178_572),
        ("fcaformer_l1", 96, 6_179_707),
        ("fcaformer_l1", 128, 6_180_855),
    ],
)
def test_paper_parameter_counts_are_exact(name, img, expected):
    spec = get_spec(name, img_size=img)
    assert n_params(meta_model(spec)) == expected == count_params(spec)


def test_l1_pieces_match_the_spec_table():
    model = meta_model(get_spec("fcaformer_l1"))
    assert n_params(model.stem) == 19_488
    assert [n_params(b) for b in model.stages[0].blocks] == [36_480, 36_480]
    assert n_params(model.stages[0].downsample) == 26_496
    assert [n_params(b) for b in model.stages[1].blocks] == [138_496, 138_496]
    assert n_params(model.stages[1].downsample) == 64_320
    assert [n_params(b) for b in model.stages[2].blocks] == [
        458_328,
        458_824,
        458_936,
        459_048,
        459_160,
        449_864,
    ]
    assert n_params(model.stages[2].downsample) == 168_640
    assert [n_params(b) for b in model.stages[3].blocks] == [1_253_930, 1_238_934]
    assert n_params(model.norm_head) + n_params(model.head) == 321_640


def _random_spec(rng: random.Random) -> ArchSpec:
    n = rng.randint(1, 5)
    n_conv = rng.randint(0, n)
    stages = []
    for i in range(n):
        if i < n_conv:
            stages.append(
                StageSpec(
                    "conv", rng.randint(1, 2), rng.choice([8, 16]), mlp_ratio=rng.choice([4.0, 1.5])
                )
            )
            continue
        heads, depth = rng.choice([1, 2]), rng.randint(1, 5)
        tme = rng.choice(["all_but_last", "none", "every:2", tuple(range(0, depth - 1, 3))])
        stages.append(
            StageSpec(
                "fca", depth, heads * 8, heads, mlp_ratio=rng.choice([4.0, 2.5]),
                merge_stride=rng.randint(1, 4), cross_window=rng.choice([None, 1, 2]), tme=tme,
                enhancement=rng.random() < 0.7, scale_factors=rng.random() < 0.7,
                cross_bias=rng.random() < 0.7,
            )
        )  # fmt: skip
    mult = 2 ** (n + 1)
    img = (mult * rng.randint(1, 2), mult * rng.randint(1, 2)) if n < 5 else (mult, mult)
    return ArchSpec(tuple(stages), img, in_chans=rng.choice([1, 3]), num_classes=rng.randint(1, 7))


def test_params_equal_closed_form_on_random_specs():
    rng = random.Random(7)
    for _ in range(40):
        spec = _random_spec(rng)
        assert n_params(meta_model(spec)) == count_params(spec), spec.short()


@pytest.mark.parametrize("img", [64, 96, (224, 160)])
def test_forward_shapes_tiny(img):
    spec = get_spec("fcaformer_tiny", img_size=img, num_classes=7)
    model = build_model(spec).eval()
    h, w = spec.img_size
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, h, w))
        out = model(torch.randn(2, 3, h, w))
    assert feats.shape == (2, 48, h // 32, w // 32)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_forward_shape_l1_224():
    model = build_model(get_spec("fcaformer_l1")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)


def test_input_of_another_size_is_refused():
    model = build_model(get_spec("fcaformer_nano", img_size=64))
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(1, 3, 96, 96))


@pytest.mark.parametrize(
    "spec",
    [
        replace(get_spec("fcaformer_tiny", img_size=64, drop_path_rate=0.1), layer_scale_init=1.0),
        ArchSpec(
            (StageSpec("fca", 4, 16, 2, merge_stride=2, cross_window=1, tme="every:2", scale_factors=False),
             StageSpec("fca", 3, 24, 1, mlp_ratio=2.5, enhancement=False, cross_bias=False)),
            img_size=(32, 16), layer_scale_init=1.0,
        ),
    ],
    ids=["tiny", "all-fca-switches"],
)  # fmt: skip
def test_every_parameter_receives_a_gradient(spec):
    model = build_model(spec).train()
    model(torch.randn(2, spec.in_chans, *spec.img_size)).logsumexp(-1).sum().backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not no_grad


def test_drop_path_linspace_covers_all_blocks_conv_included():
    spec = get_spec("fcaformer_tiny", img_size=64, drop_path_rate=0.3)
    model = build_model(spec)
    rates = [blk.drop_path.p for st in model.stages for blk in st.blocks]
    assert rates == pytest.approx(drop_path_rates(0.3, sum(spec.depths)))
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3) and len(rates) == 7


def test_reference_init():
    spec = get_spec("fcaformer_tiny", img_size=64)
    model = build_model(spec)
    blk = model.stages[2].blocks[1]  # reads block 0's cross tokens, emits its own
    assert torch.all(blk.attention_biases == 0) and torch.all(blk.s_token_bias == 0)
    assert torch.all(blk.s_scale_factors == 1)
    assert torch.all(blk.gamma_1 == 1e-6) and torch.all(model.stages[0].blocks[0].gamma == 1e-6)
    assert torch.all(blk.qkv.bias == 0) and 0.015 < blk.mlp.fc1.weight.std() < 0.025
    assert blk.norm1.eps == 1e-5 and model.stages[0].blocks[0].norm.eps == 1e-6
    assert blk.local_conv.c.bias is None and blk.dw_conv.bias is None
    assert blk.s_token_bias.shape == (1, 1, 1, 1) and blk.s_scale_factors.shape == (1, 1, 1)
    assert model.stages[2].blocks[-1].dw_conv is None


def test_switches_and_merge_geometry():
    st = StageSpec(
        "fca", 3, 16, 2, merge_stride=3, enhancement=False, scale_factors=False, cross_bias=False
    )
    spec = ArchSpec((st,), img_size=(32, 48))  # grid 8x12, 3x4 = 12 tokens per emitter
    model = build_model(spec)
    blk = model.stages[0].blocks[2]
    assert blk.local_conv is None and blk.s_scale_factors is None and blk.s_token_bias is None
    assert blk.s_norm is not None and blk.cross_in == 24
    dw = model.stages[0].blocks[0].dw_conv
    assert (dw.kernel_size, dw.stride, dw.padding, dw.groups) == ((5, 5), (3, 3), (2, 2), 16)
    assert model.stages[0].blocks[0].attention_biases.shape == (2, 96)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(img_size=100), "img_size"),
        (dict(num_classes=0), "num_classes"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
    ],
)
def test_invalid_specs_name_the_field(change, field):
    with pytest.raises(SpecError, match=field):
        get_spec("fcaformer_l1", **change)


def test_invalid_stage_fields_are_named():
    with pytest.raises(SpecError, match=r"stages\[2\]\.heads"):
        ArchSpec.from_dict({"stages": [{"kind": "conv", "depth": 1, "width": 8}, {"kind": "conv", "depth": 1, "width": 8},
                                       {"kind": "fca", "depth": 2, "width": 30, "heads": 4}]})  # fmt: skip
    with pytest.raises(SpecError, match="tme"):
        StageSpec("fca", 2, 16, 2, tme=(1,))
    with pytest.raises(SpecError, match="a stage of depth 1 has no block that can emit"):
        StageSpec("fca", 1, 16, 2, tme=(0,))
    with pytest.raises(SpecError, match="spec"):
        build_model({"stages": []})


def test_arch_id_is_stable_and_canonical():
    l1 = get_spec("fcaformer_l1")
    assert l1.arch_id == "dfd1edf71481"  # pinned: a change here renames every stored result
    assert get_spec("fcaformer_l1", cross_window=100).arch_id == l1.arch_id  # W >= emitters
    explicit = replace(
        l1, stages=(*l1.stages[:2], replace(l1.stages[2], tme=(0, 1, 2, 3, 4)), l1.stages[3])
    )
    assert explicit.arch_id == l1.arch_id
    assert get_spec("fcaformer_l1", cross_window=2).arch_id != l1.arch_id
    assert ArchSpec.from_json(l1.to_json()).arch_id == l1.arch_id
    # Same canonical form, same network.
    a = get_spec("fcaformer_nano", img_size=64, tme="none", merge_stride=2, cross_window=3)
    b = get_spec("fcaformer_nano", img_size=64, tme="none")
    assert a.arch_id == b.arch_id
    shapes = lambda s: {k: v.shape for k, v in meta_model(s).state_dict().items()}  # noqa: E731
    assert shapes(a) == shapes(b)
