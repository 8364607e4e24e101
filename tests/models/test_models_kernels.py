"""fcasearch's CPU attention kernel: built for real, equal to SDPA, used by the inference form,
counted, compiled, and replaced by SDPA with a reason where it cannot be built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from kernel_helpers import OpNames, needs_kernel
from test_models_attention import _randomize  # bias tables, layer scales, scale factors

from fcasearch.models import build_model, calibrate_batchnorm, fuse_for_inference, get_spec
from fcasearch.models.fca import FcaBlock
from fcasearch.models.kernels import (
    attention_kernel_applies,
    dwconv2d,
    dwconv_kernel_applies,
    layer_norm,
    layer_norm_kernel_applies,
    linear,
    pack_linear,
)
from fcasearch.spec import ArchSpec, StageSpec


def _qkv(b, h, n, t, d, gen):
    """q, k, v as the model makes them: strided views of packed projections."""
    qkv = torch.randn(b, n, 3, h, d, generator=gen)
    kv = torch.randn(b, t, 2, h, d, generator=gen)
    return qkv[:, :, 0].transpose(1, 2), kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)


@needs_kernel
@pytest.mark.parametrize(
    "b,h,n,t,d",
    [
        (1, 6, 196, 212, 32),  # L1 stage 2, block 1: T not a multiple of 16
        (1, 10, 49, 53, 32),  # L1 stage 3: N not a multiple of 8 (the row block)
        (2, 3, 50, 61, 64),
        (3, 4, 33, 40, 48),
        (2, 2, 17, 31, 24),  # head dim not a multiple of 16: padded values
        (1, 2, 12, 40, 100),
        (2, 2, 20, 70, 128),
        (1, 1, 3, 1, 1),  # one key
    ],
)
@pytest.mark.parametrize("per_batch_bias", [False, True])
def test_kernel_equals_sdpa(kernel, b, h, n, t, d, per_batch_bias):
    gen = torch.Generator().manual_seed(b * 1000 + t)
    q, k, v = _qkv(b, h, n, t, d, gen)
    bias = torch.randn(b if per_batch_bias else 1, h, n, t, generator=gen) * 5
    with torch.inference_mode():
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2)
        got = kernel(q, k, v, bias, d**-0.5)
    assert got.shape == (b, n, h, d) and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


@needs_kernel
def test_kernel_softmax_is_stable_for_huge_and_tiny_logits(kernel):
    gen = torch.Generator().manual_seed(1)
    q, k, v = _qkv(1, 2, 20, 37, 32, gen)
    bias = torch.randn(1, 2, 20, 37, generator=gen) * 40  # exp overflows without the max
    bias[..., 5] = 1e4  # one key takes all the weight
    bias[0, 1, 3] = -1e4  # a row whose logits all lie far below 0
    bias[0, 1, 3, 7] = -9.0e3
    with torch.inference_mode():
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2)
        got = kernel(q, k, v, bias, 32**-0.5)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(got[0, 0, 1], v[0, 1, 5], rtol=0, atol=1e-6)  # all on key 5


@needs_kernel
def test_kernel_softmax_matches_double_precision(kernel):
    # q = 0 and one-hot values: the output rows are the softmax of the bias alone, so this checks
    # the kernel's exponential, row sums and scaling (simd.h's vexp: within about 1 ulp)
    gen = torch.Generator().manual_seed(3)
    t = 64
    bias = torch.randn(1, 2, 24, t, generator=gen, dtype=torch.float64) * 6
    q = torch.zeros(1, 2, 24, t)
    k = torch.randn(1, 2, t, t, generator=gen)
    v = torch.eye(t).expand(1, 2, t, t).contiguous()
    with torch.inference_mode():
        got = kernel(q, k, v, bias.float(), 1.0)  # (1, 24, 2, t)
    want = torch.softmax(bias.float().double(), dim=-1).transpose(1, 2)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-12)


@needs_kernel
def test_kernel_rejects_bad_inputs_naming_them(kernel):
    q, k, v = (torch.randn(1, 2, 8, 32) for _ in range(3))
    bias = torch.zeros(1, 2, 8, 8)
    with pytest.raises(RuntimeError, match="q must be a float32 CPU tensor"):
        kernel(q.double(), k, v, bias, 1.0)
    with pytest.raises(RuntimeError, match=r"bias .* is not"):
        kernel(q, k, v, torch.zeros(1, 2, 8, 9), 1.0)
    with pytest.raises(RuntimeError, match="do not match"):
        kernel(q, torch.randn(1, 2, 8, 16), v, bias, 1.0)
    with pytest.raises(RuntimeError, match="k must have unit stride"):
        kernel(q, k.transpose(2, 3), v, bias, 1.0)
    with pytest.raises(RuntimeError, match="head dim 160"):
        big = torch.randn(1, 1, 4, 160)
        kernel(big, big, big, torch.zeros(1, 1, 4, 4), 1.0)


@needs_kernel
@pytest.mark.parametrize(
    "b,c,h,w,k,stride,pad,bias,gelu",
    [
        (1, 192, 14, 14, 3, 1, 1, True, False),  # FcaFormer local conv
        (1, 192, 14, 14, 7, 4, 3, False, False),  # token merge
        (2, 128, 28, 28, 3, 2, 1, True, True),  # downsample, GELU fused
        (1, 64, 56, 56, 7, 1, 3, True, False),  # ConvNeXt 7x7 (stride-1 fast path)
        (2, 48, 9, 23, 5, 1, 2, True, True),  # 5x5 fast path, a row of 23
        (3, 20, 9, 7, 3, 2, 1, True, True),  # 20 channels: a partial vector
        (1, 33, 5, 6, 5, 2, 2, False, False),
        (2, 8, 1, 1, 3, 1, 1, True, False),  # a 1x1 map: every tap but one in the padding
        (1, 16, 4, 4, 3, 1, 0, True, False),  # no padding
        (2, 128, 28, 28, 7, 1, 3, True, True),  # a row of 3.5 blocks of 8, both edges padded
        (1, 72, 11, 13, 7, 1, 3, True, False),  # 72 channels on the stride-1 path: masked lanes
        (1, 24, 5, 3, 7, 1, 3, False, True),  # a row narrower than the kernel, all in one block
        (1, 40, 6, 9, 3, 1, 2, True, False),  # padding wider than the kernel's reach
    ],
)
def test_dwconv_equals_conv2d(kernel, b, c, h, w, k, stride, pad, bias, gelu):
    gen = torch.Generator().manual_seed(c + k)
    x = torch.randn(b, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, generator=gen)
    bvec = torch.randn(c, generator=gen) if bias else None
    with torch.inference_mode():
        want = F.conv2d(x, weight, bvec, stride, pad, groups=c)
        if gelu:
            want = F.gelu(want)
        got = dwconv2d(x, weight, bvec, stride, pad, gelu)
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_dwconv_rejects_bad_inputs_and_skips_what_it_does_not_serve(kernel):
    x = torch.randn(1, 8, 5, 5)
    w = torch.randn(8, 1, 3, 3)
    with pytest.raises(RuntimeError, match="channels-last"):
        dwconv2d(x, w, None, 1, 1)
    xcl = x.contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match=r"weight \[8, 1, 3, 2\] is not a \(C, 1, k, k\)"):
        dwconv2d(xcl, torch.randn(8, 1, 3, 2), None, 1, 1)
    with pytest.raises(RuntimeError, match="smaller than the kernel"):
        dwconv2d(xcl, torch.randn(8, 1, 9, 9), None, 1, 0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8).requires_grad_(False)
    assert dwconv_kernel_applies(conv, xcl)
    assert not dwconv_kernel_applies(conv, x)  # not channels-last
    assert not dwconv_kernel_applies(torch.nn.Conv2d(8, 8, 3, groups=4), xcl)  # not depthwise
    assert not dwconv_kernel_applies(torch.nn.Conv2d(8, 8, 3, dilation=2, groups=8), xcl)
    assert not dwconv_kernel_applies(conv, xcl.double())


@needs_kernel
@pytest.mark.parametrize(
    ("shape", "offset"),
    [((1, 56, 56, 64), 0.0), ((2, 196, 192), 3.0), ((1, 49, 320), -40.0), ((5, 37), 1.0),
     ((3, 7), 0.0), ((4, 16), 100.0)],
)  # fmt: skip
def test_layer_norm_equals_aten(kernel, shape, offset):
    g = torch.Generator().manual_seed(sum(shape))
    c = shape[-1]
    x = torch.randn(shape, generator=g) * 2.0 + offset  # rows far from zero mean too
    w, b = torch.randn(c, generator=g), torch.randn(c, generator=g)
    for eps in (1e-5, 1e-6):
        want = F.layer_norm(x, (c,), w, b, eps)
        got = layer_norm(x, w, b, eps)
        assert got.shape == x.shape and got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)
    # a constant row: variance 0, output the bias
    flat = torch.full((2, c), 7.5)
    torch.testing.assert_close(layer_norm(flat, w, b, 1e-5), b.expand(2, c), rtol=0, atol=1e-6)


@needs_kernel
@pytest.mark.parametrize(
    ("rows", "k", "n"),
    [((49,), 320, 1280), ((2, 7), 64, 256), ((3,), 5, 7), ((1,), 1, 33), ((63,), 17, 100),
     ((16,), 64, 32), ((1, 196), 192, 576)],
)  # fmt: skip
@pytest.mark.parametrize("epilogue", ["none", "gelu", "residual"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_f_linear(kernel, rows, k, n, epilogue, with_bias):
    g = torch.Generator().manual_seed(k * n + len(rows))
    x = torch.randn(*rows, k, generator=g)
    w = torch.randn(n, k, generator=g) / k**0.5
    b = torch.randn(n, generator=g) if with_bias else None
    want = F.linear(x, w, b)
    residual = None
    if epilogue == "gelu":
        want = F.gelu(want)
    elif epilogue == "residual":  # a view with a row stride wider than n, as the models pass
        residual = torch.randn(*rows, n + 3, generator=g)[..., 1 : n + 1]
        want = want + residual
    packed = pack_linear(w)
    assert packed.shape == (-(-n // 32), k, 32)
    got = linear(x, packed, n, b, residual, epilogue == "gelu")
    assert got.shape == (*rows, n) and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_pack_linear_layout_and_linear_errors(kernel):
    w = torch.arange(40 * 3, dtype=torch.float32).view(40, 3)
    packed = pack_linear(w)
    # panel n // 32, row k, lane n % 32; lanes past the 40 columns are zero
    for n, kk in ((0, 0), (31, 2), (32, 1), (39, 2)):
        assert packed[n // 32, kk, n % 32] == w[n, kk]
    assert packed[1, :, 8:].abs().sum() == 0
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match=r"packed \[2, 3, 32\] is not pack_linear's"):
        linear(x, packed, 70)
    with pytest.raises(RuntimeError, match="GELU and a residual"):
        linear(x, packed, 40, None, torch.zeros(4, 40), True)
    with pytest.raises(RuntimeError, match=r"residual \[4, 39\] does not match the output"):
        linear(x, packed, 40, None, torch.zeros(4, 39))
    with pytest.raises(RuntimeError, match="contiguous"):
        linear(torch.randn(3, 4).t(), packed, 40)
    with pytest.raises(RuntimeError, match="bias must be a contiguous float32 vector of 40"):
        linear(x, packed, 40, torch.zeros(39))
    # into a buffer: not over its own input; a residual that is the buffer itself is fine
    own = torch.ops.fcasearch_kernels
    square = pack_linear(torch.randn(3, 3))
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        own.linear_out(x, square, 3, None, None, False, x)
    out = torch.randn(4, 3)
    want = F.linear(x, w[:3]) + out
    torch.testing.assert_close(
        own.linear_out(x, pack_linear(w[:3]), 3, None, out, False, out), want
    )


@needs_kernel
def test_kernel_gelu_is_the_exact_erf_gelu(kernel):
    # the kernels' GELU (a rational erf, simd.h) against the erf GELU in double precision, on a
    # dense grid through the region where the approximation bends and past its clamp at |x| = 4
    x = torch.linspace(-12.0, 12.0, 240_000).view(-1, 16)
    got = linear(x.contiguous(), pack_linear(torch.eye(16)), 16, gelu=True).double()
    xd = x.double()
    exact = xd * 0.5 * (1.0 + torch.erf(xd / 2.0**0.5))
    # within what ATen's float GELU itself reaches on this grid (1.2e-6, near x = -3.4)
    assert (got - exact).abs().max().item() < 1.5e-6
    assert (got - exact).abs().max() <= 1.5 * (F.gelu(x).double() - exact).abs().max()


@needs_kernel
@pytest.mark.parametrize("shape", [(1, 320, 7, 7), (2, 37, 3, 5), (3, 16, 1, 1)])
def test_pool_norm_equals_mean_then_layer_norm(kernel, shape):
    # the fused head's mean over the map and its LayerNorm (channels past the last whole vector
    # too: 37 channels)
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) + 2.0).contiguous(memory_format=torch.channels_last)
    c = shape[1]
    w, b = torch.randn(c, generator=g), torch.randn(c, generator=g)
    got = torch.ops.fcasearch_kernels.pool_norm(x, w, b, 1e-5)
    want = F.layer_norm(x.mean(dim=(2, 3)), (c,), w, b, 1e-5)
    assert got.shape == (shape[0], c)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


@needs_kernel
def test_pool_norm_says_what_is_wrong(kernel):
    x = torch.randn(1, 8, 3, 3)
    w, b = torch.ones(8), torch.zeros(8)
    with pytest.raises(RuntimeError, match="channels-last float32 CPU"):
        torch.ops.fcasearch_kernels.pool_norm(x, w, b, 1e-5)  # NCHW
    x = x.contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="vectors of size 8"):
        torch.ops.fcasearch_kernels.pool_norm(x, torch.ones(7), b, 1e-5)


@needs_kernel
def test_layer_norm_rejects_bad_inputs_and_skips_what_it_does_not_serve(kernel):
    x = torch.randn(4, 8)
    w, b = torch.ones(8), torch.zeros(8)
    with pytest.raises(RuntimeError, match="contiguous"):
        layer_norm(x.t(), torch.ones(4), torch.zeros(4), 1e-5)
    with pytest.raises(RuntimeError, match="vectors of size 8"):
        layer_norm(x, torch.ones(7), b, 1e-5)
    with pytest.raises(RuntimeError, match="float32"):
        layer_norm(x.double(), w, b, 1e-5)
    norm = torch.nn.LayerNorm(8).requires_grad_(False)
    assert layer_norm_kernel_applies(norm, x)
    assert not layer_norm_kernel_applies(norm, x.t().contiguous().t())  # not contiguous
    assert not layer_norm_kernel_applies(norm, x.double())
    assert not layer_norm_kernel_applies(torch.nn.LayerNorm(8, elementwise_affine=False), x)
    assert not layer_norm_kernel_applies(torch.nn.LayerNorm((2, 4)), x.view(4, 2, 4))
    assert not layer_norm_kernel_applies(torch.nn.LayerNorm(8), x)  # weight needs autograd


def _spec() -> ArchSpec:
    return ArchSpec(
        (StageSpec("conv", 1, 16), StageSpec("fca", 4, 32, 2, merge_stride=2, cross_window=2),
         StageSpec("fca", 2, 48, 3)),
        img_size=(64, 32),
    )  # fmt: skip


@needs_kernel
def test_fused_model_runs_attention_on_the_kernel_and_equals_sdpa(kernel):
    model = build_model(_spec()).eval()  # head dims 16 and 16
    _randomize(model)
    x = torch.randn(3, 3, 64, 32)
    with torch.inference_mode():
        unfused = model(x)
    fused = fuse_for_inference(model, kernels="auto", block_ops=False)  # each step seen
    assert fused.kernels_note.startswith("fcasearch's CPU kernels")
    assert {m.attn_impl for m in fused.modules() if isinstance(m, FcaBlock)} == {"kernel"}
    with torch.inference_mode(), OpNames() as ops:
        out = fused(x)
    assert ops.names.count("fcasearch_kernels.fca_attention") == 6  # every block
    assert "aten._scaled_dot_product_flash_attention_for_cpu" not in ops.names
    # every depthwise conv: 6 local convs, 3 + 1 token merges, 2 downsamples, 1 ConvNeXt
    assert ops.names.count("fcasearch_kernels.dwconv2d") == 13
    # LayerNorms: the ConvNeXt block's, 3 per FcaFormer block (norm1, norm2, the MLP's) and s_norm
    # in the 3 + 1 blocks that read cross tokens; the head's mean and norm are one kernel
    # (pool_norm) with fcasearch's GEMMs, else on ATen
    assert ops.names.count("fcasearch_kernels.layer_norm") == 1 + 6 * 3 + 4
    own_head = fused.gemm == "fcasearch"
    assert ops.names.count("fcasearch_kernels.pool_norm") == int(own_head)
    assert ops.names.count("aten.layer_norm") == int(not own_head)
    torch.testing.assert_close(out, unfused, rtol=1e-4, atol=1e-5)
    # switching back: no kernel call, same outputs
    fuse_for_inference(fused, kernels="off")
    with torch.inference_mode(), OpNames() as ops:
        torch.testing.assert_close(fused(x), out, rtol=1e-4, atol=1e-5)
    assert "fcasearch_kernels.fca_attention" not in ops.names
    assert "fcasearch_kernels.dwconv2d" not in ops.names
    assert "fcasearch_kernels.layer_norm" not in ops.names


@needs_kernel
def test_kernel_is_skipped_where_autograd_needs_the_graph(kernel):
    model = build_model(_spec()).set_attention_impl("kernel").eval()
    x = torch.randn(2, 3, 64, 32)
    with OpNames() as ops:
        model(x).sum().backward()  # SDPA instead: the kernel has no backward
    assert "fcasearch_kernels.fca_attention" not in ops.names
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    q = torch.randn(1, 2, 4, 32)
    assert attention_kernel_applies(q)
    assert not attention_kernel_applies(q.double())
    assert not attention_kernel_applies(torch.randn(1, 2, 4, 160))
    assert not attention_kernel_applies(q.requires_grad_())


def _run(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["stderr"] = proc.stderr
    return out


_PROBE = """
import json, torch
from fcasearch.models import build_model, fuse_for_inference, get_spec
from fcasearch.models.kernels import kernel_status
m = fuse_for_inference(build_model(get_spec("fcaformer_nano", img_size=64)))
try:
    fuse_for_inference(m, kernels="on")
    forced = "ok"
except ValueError as e:
    forced = str(e)
print(json.dumps({"note": m.kernels_note, "status": kernel_status(), "forced": forced}))
"""


def test_without_the_kernel_sdpa_runs_and_the_reason_is_given():
    out = _run(_PROBE, FCASEARCH_KERNELS="0")
    assert out["note"] == "library operators (fcasearch's CPU kernels are unavailable: disabled by FCASEARCH_KERNELS=0)"  # fmt: skip
    assert out["forced"].startswith("kernels: 'on' but fcasearch's CPU kernels are unavailable")


_UNPICKLE = """
import json, torch
m, x, want = torch.load({path!r}, weights_only=False)
with torch.inference_mode():
    got = m(x)
print(json.dumps({{"diff": (got - want).abs().max().item(), "gemm": m.gemm}}))
"""


@needs_kernel
def test_a_fused_model_saved_with_the_kernels_runs_where_they_are_missing(kernel, tmp_path):
    # every kernel use (attention, depthwise convs, LayerNorms, the GEMM library) checks that the
    # kernels are loaded, so a model fused with them falls back to the library operators
    model = build_model(_spec()).eval()
    _randomize(model)
    fused = fuse_for_inference(model, gemm="fcasearch")
    x = torch.randn(2, 3, 64, 32)
    with torch.inference_mode():
        want = fused(x)
    path = tmp_path / "fused.pt"
    torch.save((fused, x, want), path)
    out = _run(_UNPICKLE.format(path=str(path)), FCASEARCH_KERNELS="0")
    assert out["gemm"] == "fcasearch" and out["diff"] < 1e-4


@needs_kernel
@pytest.mark.slow
def test_first_use_builds_into_the_cache_and_later_processes_load_it(tmp_path: Path):
    cache = tmp_path / "kernels"
    first = _run(_PROBE, FCASEARCH_KERNEL_CACHE=str(cache))
    assert "building the CPU kernels" in first["stderr"]
    assert first["note"].startswith("fcasearch's CPU kernels") and first["forced"] == "ok"
    assert first["status"].startswith(f"loaded from {cache}")
    assert len(list(cache.glob("kernels-*/*.so"))) == 1
    second = _run(_PROBE, FCASEARCH_KERNEL_CACHE=str(cache))
    assert "building" not in second["stderr"] and second["status"] == first["status"]


@needs_kernel
def test_compiled_inference_form_calls_the_kernel(kernel):
    from fcasearch.models import compile_for_inference

    spec = get_spec("fcaformer_nano", img_size=64)
    model = calibrate_batchnorm(build_model(spec))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        want = model(x)
    fused = fuse_for_inference(model, block_ops=False)  # the eager kernels one call each
    assert {m.attn_impl for m in fused.modules() if isinstance(m, FcaBlock)} == {"kernel"}

    def calls(op: str) -> tuple[int, list[str]]:
        """``op``'s calls in an eager forward, and the events of the compiled form's forward."""
        with torch.inference_mode(), OpNames() as ops:
            fused(x)
        run = compile_for_inference(fused, x)
        with torch.inference_mode(), torch.profiler.profile() as prof:
            got = run(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        return ops.names.count(f"fcasearch_kernels.{op}"), [e.name for e in prof.events()]

    eager_dwconvs, names = calls("dwconv2d")
    assert names.count("fcasearch_kernels::fca_attention") == sum(
        isinstance(m, FcaBlock) for m in fused.modules()
    )
    # every depthwise conv the eager form runs on the kernel (downsamples included) is one too
    assert eager_dwconvs > 0 and names.count("fcasearch_kernels::dwconv2d") == eager_dwconvs
    # and every Linear GEMM, where the kernels are fcasearch's GEMM library (the model's choice
    # on an AMD CPU; forced here so the test holds on any CPU)
    fuse_for_inference(fused, gemm="fcasearch", block_ops=False)
    eager_linears, names = calls("linear")
    assert eager_linears > 0 and names.count("fcasearch_kernels::linear") == eager_linears
    assert "mkldnn::_linear_pointwise" not in names and "aten::addmm" not in names


@needs_kernel
@pytest.mark.slow
def test_a_failed_build_names_the_compiler_error_and_the_library_operators_run(tmp_path: Path):
    code = (
        "import fcasearch.models.kernels as K\n"
        "K._CFLAGS = (*K._CFLAGS, '-fno-such-option-for-fcasearch')\n" + _PROBE
    )
    out = _run(code, FCASEARCH_KERNEL_CACHE=str(tmp_path / "kernels"))
    assert "unrecognized command-line option" in out["status"]
    assert "-fno-such-option-for-fcasearch" in out["status"]
    assert out["status"].startswith("unavailable: the build failed (")
    assert out["note"] == f"library operators (fcasearch's CPU kernels are {out['status']})"
    assert "using the library operators" in out["stderr"]
    assert out["forced"].startswith("kernels: 'on' but fcasearch's CPU kernels are unavailable")
