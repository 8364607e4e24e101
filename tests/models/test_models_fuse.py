"""fuse_for_inference: Conv-BN and layer scales folded, bias gathered once, outputs equal the\nunfused model in eval."""

from __future__ import annotations

import copy
import io

import torch
from torch import nn

from fcasearch.models import FcaFormer, build_model, fuse_for_inference, get_spec
from fcasearch.models.convnext import ConvNeXtBlock, ConvStage, Downsample, Stem
from fcasearch.models.fca import FcaBlock, FcaStage
from fcasearch.models.layers import ConvBN, DropPath, Mlp
from fcasearch.spec import ArchSpec, StageSpec


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


def test_convbn_fuse_keeps_eps_for_small_running_variances():
    """Variances near BN's eps (1e-5), as a channel that barely varies gives: the fold must
    divide by sqrt(var + eps) like BN does, and a channel of variance 0 stays finite."""
    cbn = _trained_looking(ConvBN(4, 6, 3, 1, 1), seed=3).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        cbn.bn.running_var.copy_(1e-4 + torch.rand(6, generator=g) * 9e-4)
        cbn.bn.running_var[0] = 0.0
    assert cbn.bn.eps == 1e-5
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        want, got = cbn(x), cbn.fuse()(x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_fused_model_is_made_of_ordinary_modules():
    spec = get_spec("fcaformer_tiny", img_size=64, num_classes=5)
    model = fuse_for_inference(_trained_looking(build_model(spec), seed=2))
    ours = (
        FcaFormer,
        Stem,
        Downsample,
        ConvStage,
        ConvNeXtBlock,
        FcaStage,
        FcaBlock,
        Mlp,
        DropPath,
    )
    plain = (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.GELU, nn.ModuleList)
    odd = [n for n, m in model.named_modules() if not isinstance(m, ours) and type(m) not in plain]
    assert not odd  # every ConvBN became a plain Conv2d with bias
    blocks = [m for m in model.modules() if isinstance(m, FcaBlock)]
    assert all(b.frozen_bias is not None and b.frozen_bias.is_contiguous() for b in blocks)
    assert not any(p.requires_grad for p in model.parameters())


def test_fused_model_survives_copy_and_pickle():
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=3)
    model = fuse_for_inference(_trained_looking(build_model(spec), seed=4))
    x = torch.randn(2, 3, 32, 32)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    with torch.inference_mode():
        want = model(x)
        for clone in (copy.deepcopy(model), torch.load(buf, weights_only=False)):
            assert torch.equal(clone(x), want)


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
        # one pass (what measurements use) gives the same scale
        calibrate_batchnorm(model, steps=1, generator=torch.Generator().manual_seed(1))
        model(x)
        once = seen["x"].std().item()
    assert not model.training
    assert before < 1e-6 and 0.1 < after < 10 and 0.5 < once / after < 2
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
