"""FcaFormer attention: SDPA == explicit, the bias index and table, the block reachable by patches."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fcasearch.models import attention_impl, build_model, fuse_for_inference, get_spec
from fcasearch.models.fca import FcaBlock, _relative_index_cpu, relative_index
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


def test_bias_follows_the_tables_unless_frozen_by_fuse():
    model = build_model(get_spec("fcaformer_nano", img_size=64)).eval()
    blk = _block(model)
    n = blk.attention_bias_idxs.shape[0]
    with torch.no_grad():
        blk.attention_biases.add_(1.0)
        blk.s_token_bias.fill_(2.0)
        bias = blk.attention_bias()
    assert bias.shape == (1, blk.num_heads, n, n + blk.cross_in)
    assert torch.all(bias[..., :n] == 1.0) and torch.all(bias[..., n:] == 2.0)
    fuse_for_inference(model)
    with torch.no_grad():
        blk.attention_biases.add_(1.0)  # the fused form gathered its bias once
    assert blk.attention_bias() is blk.frozen_bias and torch.all(blk.frozen_bias[..., :n] == 1.0)


def test_unknown_attention_impl_is_refused():
    model = build_model(get_spec("fcaformer_nano", img_size=64))
    with pytest.raises(ValueError, match="attn_impl: 'flash' is not one of sdpa, explicit"):
        model.set_attention_impl("flash")
    with pytest.raises(ValueError, match="attn_impl"), attention_impl(model, "kernel"):
        pass
    _block(model).attn_impl = "typo"
    with pytest.raises(ValueError, match="attn_impl: 'typo'"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_a_patched_block_changes_the_output(monkeypatch, fused):
    # latency and accuracy run the Python modules: an edit of FcaBlock reaches every forward
    model = build_model(get_spec("fcaformer_nano", img_size=64)).eval()
    _randomize(model)
    if fused:
        fuse_for_inference(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        before = model(x)
    calls = []
    original = FcaBlock.attention

    def doubled(self, xn, cross):
        calls.append(self)
        return 2 * original(self, xn, cross)

    monkeypatch.setattr(FcaBlock, "attention", doubled)
    with torch.inference_mode():
        after = model(x)
    blocks = [m for m in model.modules() if isinstance(m, FcaBlock)]
    assert calls == blocks  # every block, in order, once
    assert not torch.allclose(before, after)
    forward = FcaBlock.forward

    def zeroed(self, t, cross=None):
        out, emitted = forward(self, t, cross)
        return out * 0, emitted

    monkeypatch.setattr(FcaBlock, "forward", zeroed)
    with torch.inference_mode():
        flat = model(x)
    assert torch.allclose(flat, flat[:1].expand_as(flat))  # input no longer reaches the head


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


def test_a_model_built_for_measuring_first_does_not_break_training_later():
    # the bias index is cached per grid and shared: the first model of a grid here is built under
    # inference_mode (as a measurement builds it), the next one trains
    spec = get_spec("fcaformer_nano", img_size=96)
    _relative_index_cpu.cache_clear()
    with torch.inference_mode():
        build_model(spec).eval()(torch.randn(1, 3, 96, 96))
    model = build_model(spec).train()
    model(torch.randn(2, 3, 96, 96)).sum().backward()
    assert _block(model).attention_biases.grad is not None


def test_outputs_follow_load_state_dict():
    spec = get_spec("fcaformer_nano", img_size=64)
    model, other = build_model(spec).eval(), build_model(spec).eval()
    _randomize(other)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
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
