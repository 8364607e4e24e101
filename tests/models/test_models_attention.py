"""FcaFormer attention: SDPA path == explicit path, bias index, cached bias behaviour."""

from __future__ import annotations

from dataclasses import replace

import torch

from fcasearch.models import attention_impl, build_model, get_spec
from fcasearch.models.fca import FcaBlock, relative_index
from fcasearch.spec import ArchSpec, StageSpec


def _randomize(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("attention_biases", "s_token_bias")):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith(("gamma", "gamma_1", "gamma_2", "s_scale_factors")):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)


def test_relative_index_non_square():
    idx = relative_index(2, 3)  # tokens (r, c) row-major: (0,0) (0,1) (0,2) (1,0) (1,1) (1,2)
    assert idx.shape == (6, 6)
    assert idx[0, 5] == 1 * 3 + 2 and idx[2, 3] == 1 * 3 + 2 and idx[1, 4] == 3 and idx[4, 4] == 0
    assert torch.equal(idx, idx.T) and idx.max() == 5


def test_sdpa_equals_explicit_softmax():
    spec = ArchSpec(
        (StageSpec("conv", 1, 16), StageSpec("fca", 4, 32, 2, merge_stride=2, cross_window=2),
         StageSpec("fca", 2, 48, 3)),
        img_size=(64, 32),
    )  # fmt: skip
    model = build_model(spec).eval()
    _randomize(model)
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        fast = model(x)
        with attention_impl(model, "explicit"):
            slow = model(x)
        again = model(x)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast, again)  # context restored the sdpa path


def test_sdpa_equals_explicit_in_training_gradients():
    spec = replace(get_spec("fcaformer_nano", img_size=64), layer_scale_init=1.0)
    grads = {}
    for impl in ("sdpa", "explicit"):
        torch.manual_seed(0)
        model = build_model(spec).set_attention_impl(impl)
        _randomize(model)
        model(
            torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        ).sum().backward()
        grads[impl] = model.stages[2].blocks[1].attention_biases.grad.clone()
    torch.testing.assert_close(grads["sdpa"], grads["explicit"], rtol=1e-4, atol=1e-6)


def _block(model) -> FcaBlock:
    return model.stages[2].blocks[1]


def test_bias_cached_in_eval_and_invalidated_on_change():
    model = build_model(get_spec("fcaformer_nano", img_size=64)).eval()
    blk = _block(model)
    with torch.no_grad():
        first = blk.attention_mask()
        assert blk.attention_mask() is first  # cached
        blk.attention_biases.add_(1.0)  # in-place change bumps the version counter
        second = blk.attention_mask()
    assert second is not first and torch.all(second[..., : blk.attention_bias_idxs.shape[0]] == 1.0)
    model.train()
    assert blk._mask_cache is None
    with torch.no_grad():
        assert blk.attention_mask() is not blk.attention_mask()  # training: gathered every call


def test_model_built_under_inference_mode_runs_and_tracks_its_tables():
    # its tables are inference tensors: no version counter, so the mask is gathered every call
    spec = get_spec("fcaformer_nano", img_size=64)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        model = build_model(spec).eval()
        before = model(x)
        _block(model).attention_biases.add_(1.0)  # in place, no version bump
        after = model(x)
    assert not torch.equal(before, after)
    reference = build_model(spec).eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(after, reference(x))


def test_bias_cache_reflects_load_state_dict():
    spec = get_spec("fcaformer_nano", img_size=64)
    model, other = build_model(spec).eval(), build_model(spec).eval()
    _randomize(other)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)  # fills the caches
        model.load_state_dict(other.state_dict())
        torch.testing.assert_close(model(x), other(x))


def test_eval_with_grad_still_trains_the_tables():
    model = build_model(
        replace(get_spec("fcaformer_nano", img_size=64), layer_scale_init=1.0)
    ).eval()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    blk = _block(model)
    assert blk.attention_biases.grad is not None and blk.attention_biases.grad.abs().sum() > 0
    assert blk.s_token_bias.grad is not None
