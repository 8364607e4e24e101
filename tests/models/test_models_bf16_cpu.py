"""bf16 CPU training does not depend on what the heap held before it (a torch kernel bug guard).

torch's CPU bf16 Conv2d backward reads memory it never wrote when the output is one column wide
and a window reaches into the zero padding; FcaFormer's token-merge conv hits that on the nano
model at 32 px. Work done before training (``measure_cost``'s profiled step, or anything else)
then decided whether the weight gradients were right, garbage or NaN.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fcasearch.data import DataBundle, get_dataset
from fcasearch.measure import measure_cost
from fcasearch.models import build_model, get_spec
from fcasearch.models.layers import PaddedConv2d
from fcasearch.train import TrainConfig, train_model

SPEC = dict(img_size=32, num_classes=10, in_chans=1)


@pytest.fixture(scope="module")
def small() -> DataBundle:
    return get_dataset("digits", img_size=32, subset_fraction=0.05)


def _dirty_heap(value: float) -> None:
    """Leave freed blocks of many sizes filled with ``value`` for the next allocations."""
    sizes = (16, 64, 256, 1024, 4096, 16384, 65536)
    junk = [
        torch.full((n,), value, dtype=dt) for n in sizes for dt in (torch.float32, torch.bfloat16)
    ]
    del junk


def _bf16_history(data: DataBundle) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(get_spec("fcaformer_nano", **SPEC))
    config = TrainConfig(amp="bf16", channels_last=True)
    r = train_model(model, data, "steps=3", config, progress=False)
    assert r.status == "complete" and math.isfinite(r.accuracy), r.reason
    return [{k: v for k, v in h.items() if k != "seconds"} for h in r.history]


def test_bf16_training_is_unchanged_by_measure_cost(small):
    before = _bf16_history(small)
    measure_cost(get_spec("fcaformer_nano", **SPEC), latency=False, memory=True, energy=False)
    _dirty_heap(float("nan"))
    assert _bf16_history(small) == before


@pytest.mark.parametrize(
    ("groups", "channels_last", "size", "kernel", "stride"),
    [
        (16, True, (2, 2), 7, 4),  # FcaFormer token merge, stride 4 on a 2x2 grid
        (16, True, (4, 2), 5, 3),
        (1, False, (2, 1), 3, 2),  # dense convolutions fail in any layout
    ],
)
def test_padded_conv2d_bf16_weight_gradient_matches_float64(
    groups, channels_last, size, kernel, stride
):
    torch.manual_seed(0)
    conv = PaddedConv2d(16, 16, kernel, stride, kernel // 2, groups=groups, bias=False)
    for trial in range(4):
        _dirty_heap(1e30 * (trial + 1))
        x = torch.randn(32, 16, *size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        g = torch.randn(y.shape)
        gw, gx = torch.autograd.grad(y, (conv.weight, x), g)
        w64, x64 = conv.weight.detach().double().requires_grad_(), x.detach().double()
        y64 = F.conv2d(x64, w64, None, conv.stride, conv.padding, 1, groups)
        (ref,) = torch.autograd.grad(y64, (w64,), g.double())
        assert y.shape == y64.shape and torch.isfinite(gx).all()
        err = (gw.double() - ref).abs().max().item()
        assert err <= 0.05 * ref.abs().max().item(), f"trial {trial}: weight grad off by {err}"


class _Convolutions(TorchDispatchMode):
    """(padding, output shape) of every convolution dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list[int], tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.convolution.default:
            self.calls.append((list(args[4]), tuple(out.shape)))
        return out


def test_nano_bf16_training_forward_avoids_the_faulty_convolutions():
    """No convolution of the nano model runs with implicit padding on a one-column output."""
    torch.manual_seed(0)
    model = build_model(get_spec("fcaformer_nano", **SPEC)).train()
    model.to(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16), _Convolutions() as convs:
        out = model(x)
    out.float().sum().backward()
    one_column = [padding for padding, shape in convs.calls if shape[-1] == 1]
    assert one_column and not any(any(p) for p in one_column)  # they exist, all unpadded
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
