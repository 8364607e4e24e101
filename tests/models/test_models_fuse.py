"""fuse_for_inference: Conv-BN and layer scales folded, outputs equal the unfused model in eval."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.cpp_extension import is_ninja_available

from fcasearch.models import build_model, fuse_for_inference, get_spec
from fcasearch.models import layers as layers_module
from fcasearch.models.compiled import cpp_compiler_available
from fcasearch.models.convnext import Downsample
from fcasearch.models.layers import (
    ConvBN,
    default_gemm_library,
    onednn_fusion_available,
    packed_weights,
)
from fcasearch.spec import ArchSpec, StageSpec

needs_onednn = pytest.mark.skipif(
    not onednn_fusion_available(), reason="this torch build has no oneDNN fused operators"
)
needs_kernels = pytest.mark.skipif(
    not (cpp_compiler_available() and is_ninja_available()),
    reason="building fcasearch's kernels needs g++ and ninja",
)


def _trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics, biases, layer scales and tables, so that every fold matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("gamma", "gamma_1", "gamma_2", "s_scale_factors")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.1)
    return model


def test_fused_equals_unfused_in_eval():
    spec = get_spec("fcaformer_tiny", img_size=(96, 64), num_classes=9)
    model = _trained_looking(build_model(spec)).eval()
    x = torch.randn(3, 3, 96, 64)
    with torch.no_grad():
        want = model(x)
        fused = fuse_for_inference(model)
        got = fused(x)
    assert fused is model and fused.fused and not fused.training
    assert not any(isinstance(m, ConvBN) for m in fused.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert all(not n.endswith(("gamma", "gamma_1", "gamma_2")) for n, _ in fused.named_parameters())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_fuse_all_fca_network_and_idempotence():
    spec = ArchSpec(
        (StageSpec("fca", 3, 16, 2, merge_stride=2), StageSpec("fca", 2, 32, 4, enhancement=False)),
        img_size=32,
    )
    model = _trained_looking(build_model(spec), seed=1).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        want = model(x)
        fuse_for_inference(model)
        fuse_for_inference(model)  # a second call is a no-op
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_convbn_fuse_matches_eval_bn():
    cbn = _trained_looking(ConvBN(4, 6, 3, 2, 1)).eval()
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(cbn.fuse()(x), cbn(x), rtol=1e-5, atol=1e-5)


def test_inference_kernels_match_the_plain_ops():
    # img 128: the ConvNeXt stage has 32x32 = 1024 rows, so the fused oneDNN branch runs too.
    spec = get_spec("fcaformer_tiny", img_size=128, num_classes=5)
    model = _trained_looking(build_model(spec), seed=2).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        want = model(x)
    fuse_for_inference(model)
    with torch.inference_mode():
        fast = model(x)
    xg = x.clone().requires_grad_(True)  # autograd needed: the plain ops run instead
    plain = model(xg)
    plain.sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    torch.testing.assert_close(fast, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain.detach(), want, rtol=1e-4, atol=1e-4)


def test_calibrate_batchnorm_restores_unit_scale_activations():
    from fcasearch.models import calibrate_batchnorm

    model = build_model(get_spec("fcaformer_tiny", img_size=64))
    seen = {}
    model.stages[3].blocks[0].norm1.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.eval()(x)
        before = seen["x"].std().item()
        calibrate_batchnorm(
            model, steps=2, batch_size=4, generator=torch.Generator().manual_seed(0)
        )
        model(x)
        after = seen["x"].std().item()
    assert not model.training
    assert before < 1e-6 and 0.1 < after < 10
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


class _OpNames(TorchDispatchMode):
    """The names of the operators dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


TORCH_GEMMS = {"aten.linear.default", "aten.addmm.default", "aten.mm.default"}


@pytest.mark.parametrize(
    "gemm",
    [
        "torch",
        pytest.param("onednn", marks=needs_onednn),
        pytest.param("fcasearch", marks=needs_kernels),
    ],
)
def test_gemm_library_runs_every_linear_and_keeps_the_outputs(gemm: str):
    # img 64, batch 2: at most 512 rows per GEMM, so "torch" never takes the large-activation
    # oneDNN kernels and "onednn" is the only reason a oneDNN Linear runs
    spec = get_spec("fcaformer_tiny", img_size=64, num_classes=5)
    model = _trained_looking(build_model(spec), seed=3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode(), _OpNames() as unfused_ops:
        want = model(x)
    linears = sum(n in TORCH_GEMMS for n in unfused_ops.names)
    downsamples = sum(isinstance(m, Downsample) for m in model.modules())
    fuse_for_inference(model, gemm=gemm, block_ops=False)  # one Python call per GEMM
    assert {m.gemm for m in model.modules() if hasattr(m, "gemm")} == {gemm}
    with torch.inference_mode(), _OpNames() as ops:
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    counts = {
        "torch": sum(n in TORCH_GEMMS for n in ops.names),
        "onednn": sum(n.startswith("mkldnn._linear_pointwise") for n in ops.names),
        "fcasearch": ops.names.count("fcasearch_kernels.linear.default"),
    }
    # fused, each downsample runs its two 1x1 convs as GEMMs too; all on the chosen library
    assert counts == {lib: linears + 2 * downsamples if lib == gemm else 0 for lib in counts}


@needs_onednn
def test_onednn_gemm_leaves_autograd_to_torch_and_a_second_fuse_switches_back():
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=3)
    model = fuse_for_inference(_trained_looking(build_model(spec), seed=4), gemm="onednn")
    x = torch.randn(2, 3, 32, 32, requires_grad=True)  # autograd needed: F.linear runs
    with _OpNames() as ops:
        model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert not any(n.startswith("mkldnn._linear_pointwise") for n in ops.names)
    fuse_for_inference(model, gemm="torch")  # already fused: only the library changes
    with torch.inference_mode(), _OpNames() as ops:
        model(x.detach())
    assert not any(n.startswith("mkldnn._linear_pointwise") for n in ops.names)


def test_unknown_gemm_library_is_a_clear_error():
    model = build_model(get_spec("fcaformer_nano", img_size=32, num_classes=3))
    with pytest.raises(
        ValueError, match="gemm: 'mkl' is not one of auto, torch, onednn, fcasearch"
    ):
        fuse_for_inference(model, gemm="mkl")
    with pytest.raises(
        ValueError, match=r"gemm: 'fcasearch' needs fcasearch's CPU kernels .* which are off"
    ):
        fuse_for_inference(model, gemm="fcasearch", kernels="off")
    assert not getattr(model, "fused", False)  # nothing was folded


@needs_onednn
@pytest.mark.parametrize(
    ("vendor", "kernels", "library"),
    [
        pytest.param("AuthenticAMD", "auto", "fcasearch", marks=needs_kernels),
        ("AuthenticAMD", "off", "onednn"),
        ("GenuineIntel", "auto", "torch"),
        ("", "off", "torch"),
    ],
)
def test_auto_takes_fcasearch_or_onednn_on_amd_cpus_only(monkeypatch, vendor, kernels, library):
    monkeypatch.setattr(layers_module, "_cpu_vendor", lambda: vendor)
    model = build_model(get_spec("fcaformer_nano", img_size=32))
    fuse_for_inference(model, kernels=kernels)
    assert model.gemm == library
    assert default_gemm_library(kernels=kernels != "off") == library


class _GemmOutputs(TorchDispatchMode):
    """Records (op name, output shape) of every GEMM dispatched while active, and the weight
    conversions to oneDNN's layout."""

    def __init__(self) -> None:
        super().__init__()
        self.gemms: list[tuple[str, tuple[int, ...]]] = []
        self.reorders = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if name in TORCH_GEMMS or name.startswith("mkldnn._linear_pointwise"):
            self.gemms.append((name, tuple(out.shape)))
        elif name.startswith("mkldnn._reorder_linear_weight"):
            self.reorders += 1
        return out


@needs_onednn
def test_onednn_gemms_run_on_packed_weights_that_follow_edits_and_copy_empty():
    spec = get_spec("fcaformer_tiny", img_size=64, num_classes=5)
    model = _trained_looking(build_model(spec), seed=5).eval()
    fuse_for_inference(model, gemm="onednn")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode(), _GemmOutputs() as first:
        want = model(x)
    packs = packed_weights(model)
    # one packed copy per distinct GEMM weight, made on the first call, in oneDNN's layout
    assert first.reorders == len(packs) > 0 and all(p.is_mkldnn for p in packs)
    with torch.inference_mode(), _GemmOutputs() as second:
        again = model(x)
    assert second.reorders == 0 and len(second.gemms) == len(first.gemms)
    torch.testing.assert_close(again, want, rtol=0, atol=0)

    # an in-place edit of a weight: its copy is made again, and the output follows the edit
    with torch.no_grad():
        model.head.weight.mul_(-2.0)
    with torch.inference_mode(), _GemmOutputs() as edited:
        got = model(x)
    assert edited.reorders == 1
    fuse_for_inference(model, gemm="torch")  # the same weights on torch's GEMM
    with torch.inference_mode():
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)
    fuse_for_inference(model, gemm="onednn")

    # copies and pickles carry no packed tensors (they have no storage); they pack on first use
    for clone in (copy.deepcopy(model), _pickled(model)):
        assert packed_weights(clone) == []
        with torch.inference_mode():
            torch.testing.assert_close(clone(x), got, rtol=0, atol=0)
        assert len(packed_weights(clone)) == len(packs)


def _pickled(model: nn.Module) -> nn.Module:
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("gemm", ["torch", pytest.param("onednn", marks=needs_onednn)])
def test_inference_mlps_run_in_row_chunks_with_unchanged_outputs(monkeypatch, gemm: str):
    spec = get_spec("fcaformer_tiny", img_size=64, num_classes=5)
    model = _trained_looking(build_model(spec), seed=6).eval()
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = model(x)
    fuse_for_inference(model, gemm=gemm)
    with torch.inference_mode(), _GemmOutputs() as whole:
        model(x)
    hidden = {m.pwconv1.out_features for m in model.modules() if hasattr(m, "pwconv1")}
    hidden |= {m.fc1.out_features for m in model.modules() if hasattr(m, "fc1")}
    limit = 4096  # far below these MLPs' hidden activations: every MLP runs in chunks
    monkeypatch.setattr(layers_module, "MLP_CHUNK_ELEMENTS", limit)
    with torch.inference_mode(), _GemmOutputs() as chunked:
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

    def mlp_hidden(rec: _GemmOutputs) -> list[int]:
        return [math.prod(shape) for _, shape in rec.gemms if shape[-1] in hidden]

    assert max(mlp_hidden(whole)) > limit
    assert len(chunked.gemms) > len(whole.gemms)
    # each chunk holds at most the limit, rounded up to whole rows
    assert all(n <= limit + max(hidden) for n in mlp_hidden(chunked))
