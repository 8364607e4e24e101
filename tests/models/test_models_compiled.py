"""compile_for_inference: the Inductor-compiled inference form computes the unfused model's outputs."""

from __future__ import annotations

import shutil

import pytest
import torch

from fcasearch.models import (
    CompileError,
    build_model,
    calibrate_batchnorm,
    compile_for_inference,
    get_spec,
)
from fcasearch.models.compiled import cpp_compiler_available

needs_cxx = pytest.mark.skipif(
    not cpp_compiler_available(), reason="torch.compile on CPU needs a C++ compiler"
)


@pytest.mark.slow
@needs_cxx
def test_compiled_equals_unfused():
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=7)
    torch.manual_seed(3)
    model = calibrate_batchnorm(build_model(spec))
    with torch.no_grad():  # every weight away from its init, layer scales and tables included
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    compiled = compile_for_inference(model, x)
    assert model.fused  # folded on the way
    with torch.inference_mode():
        got = compiled(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_compile_without_cxx_says_what_to_do(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    model = build_model(get_spec("fcaformer_nano", img_size=32, num_classes=3))
    with pytest.raises(CompileError, match="C\\+\\+ compiler"):
        compile_for_inference(model, torch.randn(1, 3, 32, 32))
