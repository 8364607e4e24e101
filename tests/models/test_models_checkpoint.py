"""Official checkpoint layout: key table, loading, clear errors, and the reference's function.

``reference_forward`` below is an independent, deliberately plain re-implementation of the
reference forward pass written from ``fcaformer-spec.md``, reading the official state dict
directly: it computes queries for the cross tokens and discards them, gathers the bias table on
every call with an index built by Python loops, and runs BatchNorm from its running statistics.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fcasearch.models import (
    CheckpointError,
    build_model,
    get_spec,
    load_reference_checkpoint,
    reference_state_dict_shapes,
    to_reference_state_dict,
)
from fcasearch.spec import CONV, ArchSpec, StageSpec

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def l1_table_from_spec_text() -> dict[str, tuple[int, ...]]:
    """The spec's key table, written out literally for L1 at 224 (1000 classes)."""
    t: dict[str, tuple[int, ...]] = {}

    def bn(p, o):
        t.update({f"{p}.bn.{n}": (() if n == "num_batches_tracked" else (o,)) for n in BN})

    t["patch_embed.seq.0.c.weight"] = (32, 3, 3, 3)
    bn("patch_embed.seq.0", 32)
    t["patch_embed.seq.2.c.weight"] = (64, 32, 3, 3)
    bn("patch_embed.seq.2", 64)
    widths, depths, heads, grids = (64, 128, 192, 320), (2, 2, 6, 2), (0, 0, 6, 10), (56, 28, 14, 7)
    for i in range(4):
        d = widths[i]
        for j in range(depths[i]):
            p = f"layer_{i}.blocks.{j}"
            if i < 2:
                t.update({f"{p}.dwconv.weight": (d, 1, 7, 7), f"{p}.dwconv.bias": (d,), f"{p}.norm.weight": (d,),
                          f"{p}.norm.bias": (d,), f"{p}.pwconv1.weight": (4 * d, d), f"{p}.pwconv1.bias": (4 * d,),
                          f"{p}.pwconv2.weight": (d, 4 * d), f"{p}.pwconv2.bias": (d,), f"{p}.gamma": (d,)})  # fmt: skip
                continue
            r, h, s = grids[i], heads[i], 16 if i == 2 else 4
            t.update({f"{p}.norm1.weight": (d,), f"{p}.norm1.bias": (d,), f"{p}.qkv.weight": (3 * d, d),
                      f"{p}.qkv.bias": (3 * d,), f"{p}.proj.weight": (d, d), f"{p}.proj.bias": (d,),
                      f"{p}.attention_biases": (h, r * r), f"{p}.gamma_1": (d,), f"{p}.gamma_2": (d,),
                      f"{p}.local_conv.c.weight": (d, 1, 3, 3), f"{p}.norm2.weight": (d,), f"{p}.norm2.bias": (d,),
                      f"{p}.mlp.norm.weight": (d,), f"{p}.mlp.norm.bias": (d,), f"{p}.mlp.fc1.weight": (4 * d, d),
                      f"{p}.mlp.fc1.bias": (4 * d,), f"{p}.mlp.fc2.weight": (d, 4 * d), f"{p}.mlp.fc2.bias": (d,)})  # fmt: skip
            bn(f"{p}.local_conv", d)
            if j < depths[i] - 1:
                t[f"{p}.dw_conv.weight"] = (d, 1, 7, 7)
            if j > 0:
                m = j * s
                t.update({f"{p}.s_norm.weight": (d,), f"{p}.s_norm.bias": (d,),
                          f"{p}.s_token_bias": (1, h, 1, m), f"{p}.s_scale_factors": (1, m, 1)})  # fmt: skip
        if i < 3:
            o = widths[i + 1]
            for n, shape in (
                ("conv1", (o, d, 1, 1)),
                ("conv2", (o, 1, 3, 3)),
                ("conv3", (o, o, 1, 1)),
            ):
                t[f"layer_{i}.downsample.{n}.c.weight"] = shape
                bn(f"layer_{i}.downsample.{n}", o)
    t.update(
        {
            "norm_head.weight": (320,),
            "norm_head.bias": (320,),
            "head.weight": (1000, 320),
            "head.bias": (1000,),
        }
    )
    return t


def test_key_table_matches_the_spec_text_for_l1():
    spec = get_spec("fcaformer_l1")
    table = l1_table_from_spec_text()
    assert reference_state_dict_shapes(spec) == table
    with torch.device("meta"):
        model = build_model(spec)
    ours = {k: tuple(v.shape) for k, v in to_reference_state_dict(model).items()}
    assert ours == table


def random_reference_state_dict(spec: ArchSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every key of the official layout with random, non-default values (BN stats included)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in reference_state_dict_shapes(spec).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(17)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("gamma", "gamma_1", "gamma_2", "s_scale_factors")) or (
            ".norm" in key and key.endswith("weight")
        ):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * (0.3 if key.endswith("weight") else 0.5)
    return sd


def reference_forward(sd: dict[str, torch.Tensor], spec: ArchSpec, x: torch.Tensor) -> torch.Tensor:
    """The reference network, written plainly from the spec (see the module docstring)."""

    def conv_bn(x, p, stride=1, pad=0, groups=1):
        x = F.conv2d(x, sd[f"{p}.c.weight"], None, stride, pad, 1, groups)
        return F.batch_norm(x, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"],
                            sd[f"{p}.bn.weight"], sd[f"{p}.bn.bias"], False, 0.0, 1e-5)  # fmt: skip

    def ln(x, p, eps=1e-5):
        return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps)

    def lin(x, p):
        return F.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])

    x = conv_bn(F.gelu(conv_bn(x, "patch_embed.seq.0", 2, 1)), "patch_embed.seq.2", 2, 1)
    for s, st in enumerate(spec.stages):
        b, c, hh, ww = x.shape
        for j in range(st.depth):
            p = f"layer_{s}.blocks.{j}"
            if st.kind == CONV:
                y = F.conv2d(x, sd[f"{p}.dwconv.weight"], sd[f"{p}.dwconv.bias"], 1, 3, 1, c)
                y = lin(
                    F.gelu(lin(ln(y.permute(0, 2, 3, 1), f"{p}.norm", 1e-6), f"{p}.pwconv1")),
                    f"{p}.pwconv2",
                )
                x = x + (sd[f"{p}.gamma"] * y).permute(0, 3, 1, 2)
                continue
            if j == 0:
                tokens, emitted = x.flatten(2).transpose(1, 2), {}
            n, h = hh * ww, st.heads
            hd = c // h
            xn = ln(tokens, f"{p}.norm1")
            src = st.sources(j)
            if src:
                cross = torch.cat([emitted[i] for i in src], dim=1)
                if f"{p}.s_scale_factors" in sd:
                    cross = cross * sd[f"{p}.s_scale_factors"]
                xn = torch.cat([xn, ln(cross, f"{p}.s_norm")], dim=1)
            t = xn.shape[1]
            qkv = lin(xn, f"{p}.qkv").reshape(b, t, 3, h, hd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0][:, :, :n] * hd**-0.5, qkv[1], qkv[2]  # cross queries discarded
            idx = torch.tensor(
                [
                    [abs(a // ww - z // ww) * ww + abs(a % ww - z % ww) for z in range(n)]
                    for a in range(n)
                ]
            )
            bias = sd[f"{p}.attention_biases"][:, idx].unsqueeze(0)
            if src:
                m = t - n
                stb = sd.get(f"{p}.s_token_bias", torch.zeros(1, h, 1, m))
                bias = torch.cat([bias, stb.expand(1, h, n, m)], dim=-1)
            attn = (q @ k.transpose(-2, -1) + bias).softmax(dim=-1)
            out = lin((attn @ v).transpose(1, 2).reshape(b, n, c), f"{p}.proj")
            tokens = tokens + sd[f"{p}.gamma_1"] * out
            grid = tokens.transpose(1, 2).reshape(b, c, hh, ww)
            if f"{p}.dw_conv.weight" in sd:
                ms = st.merge_stride
                emitted[j] = (
                    F.conv2d(grid, sd[f"{p}.dw_conv.weight"], None, ms, ms - 1, 1, c)
                    .flatten(2)
                    .transpose(1, 2)
                )
            if f"{p}.local_conv.c.weight" in sd:
                tokens = conv_bn(grid, f"{p}.local_conv", 1, 1, c).flatten(2).transpose(1, 2)
            y = lin(
                F.gelu(lin(ln(ln(tokens, f"{p}.norm2"), f"{p}.mlp.norm"), f"{p}.mlp.fc1")),
                f"{p}.mlp.fc2",
            )
            tokens = tokens + sd[f"{p}.gamma_2"] * y
            x = tokens.transpose(1, 2).reshape(b, c, hh, ww)
        if s + 1 < len(spec.stages):
            p = f"layer_{s}.downsample"
            o = spec.stages[s + 1].width
            x = conv_bn(
                F.gelu(conv_bn(F.gelu(conv_bn(x, f"{p}.conv1")), f"{p}.conv2", 2, 1, o)),
                f"{p}.conv3",
            )
    return lin(ln(x.flatten(2).mean(-1), "norm_head"), "head")


SPECS = {
    "paper-structure": get_spec("fcaformer_tiny", img_size=128, num_classes=11),
    "generalized": ArchSpec(
        (StageSpec("conv", 1, 16, mlp_ratio=3.0),
         StageSpec("fca", 5, 24, 3, merge_stride=3, cross_window=2, tme=(0, 1, 3), scale_factors=False),
         StageSpec("fca", 3, 32, 2, merge_stride=1, enhancement=False, cross_bias=False)),
        img_size=(64, 48), num_classes=5,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SPECS))
def test_loaded_model_computes_the_reference_outputs(name):
    spec = SPECS[name]
    sd = random_reference_state_dict(spec)
    model = load_reference_checkpoint(build_model(spec), {"model": sd}).eval()
    x = torch.randn(2, spec.in_chans, *spec.img_size)
    with torch.no_grad():
        want = reference_forward(sd, spec, x)
        got = model(x)
    assert want.abs().max() > 0.1  # a non-trivial output
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_round_trip_through_the_official_layout(tmp_path):
    spec = get_spec("fcaformer_nano", img_size=64)
    sd = random_reference_state_dict(spec, seed=5)
    path = tmp_path / "fcaformer_nano.pth"
    torch.save({"state_dict": sd}, path)
    model = load_reference_checkpoint(build_model(spec), torch.load(path, weights_only=True))
    back = to_reference_state_dict(model)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_wrong_resolution_is_explained():
    sd = random_reference_state_dict(get_spec("fcaformer_nano", img_size=224))
    with pytest.raises(CheckpointError) as err:
        load_reference_checkpoint(build_model(get_spec("fcaformer_nano", img_size=64)), sd)
    msg = str(err.value)
    assert "attention_biases (1, 196) for layer_2.blocks.0" in msg
    assert "14×14 grid" in msg and "img 64 → 4×4" in msg and "img_size=224" in msg


def test_wrong_model_size_names_the_lookalike():
    sd = {
        k: torch.empty(v, device="meta")
        for k, v in reference_state_dict_shapes(get_spec("fcaformer_l2")).items()
    }
    with pytest.raises(CheckpointError) as err:
        load_reference_checkpoint(build_model(get_spec("fcaformer_l1", img_size=64)), sd)
    msg = str(err.value)
    assert "different model size" in msg and "fcaformer_l2" in msg
    assert "unexpected key(s): layer_2.blocks.5.dw_conv.weight, layer_2.blocks.6." in msg


def test_wrong_classes_and_missing_keys_are_listed():
    spec = get_spec("fcaformer_nano", img_size=64)
    sd = random_reference_state_dict(get_spec("fcaformer_nano", img_size=64, num_classes=10))
    with pytest.raises(
        CheckpointError,
        match=r"num_classes=10.*head\.weight: checkpoint \(10, 32\), model \(1000, 32\)",
    ):
        load_reference_checkpoint(build_model(spec), sd)
    sd = random_reference_state_dict(spec)
    del sd["layer_2.blocks.1.s_token_bias"]
    sd["layer_2.blocks.1.extra"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError,
        match=r"missing key\(s\): layer_2\.blocks\.1\.s_token_bias.*unexpected key\(s\): layer_2\.blocks\.1\.extra",
    ):
        load_reference_checkpoint(build_model(spec), sd)


def test_fused_model_refuses_a_checkpoint():
    from fcasearch.models import fuse_for_inference

    spec = get_spec("fcaformer_nano", img_size=64)
    model = fuse_for_inference(build_model(spec))
    with pytest.raises(CheckpointError, match="fuse"):
        load_reference_checkpoint(model, random_reference_state_dict(spec))
