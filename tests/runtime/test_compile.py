"""compile_for_inference: the Inductor-compiled inference form computes the unfused model's outputs."""

from __future__ import annotations

import shutil

import pytest
import torch
from kernel_helpers import needs_kernel

from fcasearch.models import (
    CompileError,
    build_model,
    calibrate_batchnorm,
    compile_for_inference,
    fuse_for_inference,
    get_spec,
)
from fcasearch.models.compiled import cpp_compiler_available
from fcasearch.models.layers import onednn_fusion_available

needs_cxx = pytest.mark.skipif(
    not cpp_compiler_available(), reason="torch.compile on CPU needs a C++ compiler"
)


@pytest.mark.slow
@needs_cxx
def test_compiled_equals_unfused():
    spec = get_spec("fcaformer_tiny", img_size=64, num_classes=7)
    torch.manual_seed(3)
    model = calibrate_batchnorm(build_model(spec))
    with torch.no_grad():  # every weight away from its init, layer scales and tables included
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
    compiled = compile_for_inference(model, x)
    assert model.fused  # folded on the way
    with torch.inference_mode():
        got = compiled(x)
        other = compiled(x + 1.0)  # an inference tensor: dynamo recompiles, with the same settings
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(other, model(x + 1.0), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@needs_cxx
@pytest.mark.skipif(not onednn_fusion_available(), reason="no oneDNN fused operators")
def test_compiled_onednn_gemms_equal_unfused_and_survive_a_recompile():
    # oneDNN Linear ops lower only with frozen (constant) weights: a recompile that lost the
    # freezing setting would fail here instead of silently running another program
    model = calibrate_batchnorm(build_model(get_spec("fcaformer_nano", img_size=32)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, want_next = model(x), model(x * 2.0)
    compiled = compile_for_inference(fuse_for_inference(model, gemm="onednn"), x)
    with torch.inference_mode():
        got = compiled(x)
        got_next = compiled(x * 2.0)  # an inference tensor: dynamo recompiles for it
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_next, want_next, rtol=1e-4, atol=1e-4)


def test_compile_without_cxx_says_what_to_do(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    model = build_model(get_spec("fcaformer_nano", img_size=32, num_classes=3))
    with pytest.raises(CompileError, match="C\\+\\+ compiler"):
        compile_for_inference(model, torch.randn(1, 3, 32, 32))


def _tiny_on_fcasearch_gemms() -> tuple[torch.nn.Module, torch.Tensor]:
    """A fused tiny FcaFormer whose every step is on fcasearch's kernels, and an input."""
    spec = get_spec("fcaformer_tiny", img_size=64, num_classes=7)
    model = fuse_for_inference(calibrate_batchnorm(build_model(spec)), gemm="fcasearch")
    return model, torch.randn(2, 3, 64, 64)


@pytest.mark.slow
@needs_cxx
@needs_kernel
def test_compiled_form_runs_the_banded_operators_and_equals_eager(kernel):
    # stem, downsamples and ConvNeXt blocks are extern kernels of the compiled graph (their fake
    # shapes registered); the FcaFormer blocks stay per step there (Inductor fuses around them)
    model, x = _tiny_on_fcasearch_gemms()
    with torch.inference_mode():
        want = model(x)
    compiled = compile_for_inference(model, x)
    with torch.inference_mode(), torch.profiler.profile() as prof:
        got = compiled(x)
    names = {e.name for e in prof.events()}
    assert {"fcasearch_kernels::stem", "fcasearch_kernels::downsample"} <= names
    assert "fcasearch_kernels::convnext_block" in names
    assert "fcasearch_kernels::fca_block" not in names
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@needs_cxx
@needs_kernel
def test_plain_torch_compile_before_any_eager_call_runs_per_step(kernel):
    # torch.compile straight on a fused model (no eager forward has packed its weights): the
    # banded operators need packed weights, so the graph takes the per-step path instead
    model, x = _tiny_on_fcasearch_gemms()
    with torch.inference_mode(), torch.profiler.profile() as prof:
        got = torch.compile(model)(x)
    assert "fcasearch_kernels::stem" not in {e.name for e in prof.events()}
    with torch.inference_mode():
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-5)
