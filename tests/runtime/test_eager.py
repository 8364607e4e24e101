"""The eager runtime: the folded model under inference mode, the reference for all others."""

from __future__ import annotations

import torch
from torch import nn

from fcasearch.models import build_model, calibrate_batchnorm, get_spec
from fcasearch.runtime import get_runtime, inference_form


def test_eager_folds_an_fcaformer_and_computes_the_same_function():
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=5)
    model = calibrate_batchnorm(build_model(spec), generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    prepared = get_runtime("eager").prepare(model, x)
    assert model.fused  # folded in place
    assert prepared.runtime == "eager" and prepared.max_abs_diff is None
    assert "folded form" in prepared.note and "inference_mode" in prepared.note
    torch.testing.assert_close(prepared(x), want, rtol=1e-4, atol=1e-5)
    out = prepared.run()
    assert out.shape == (2, 5) and torch.is_inference(out)
    assert prepared.setup_seconds >= 0


def test_a_reference_model_runs_as_built_in_eval():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(2, 3, 8, 8))  # materialise the lazy layer
    model.train()
    same, note = inference_form(model)
    assert same is model and not model.training and note == "eval, as built (no folded form)"
    prepared = get_runtime("eager").prepare(model, torch.randn(1, 3, 8, 8))
    assert "as built" in prepared.note
