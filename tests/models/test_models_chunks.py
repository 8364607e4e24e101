"""MLP branches in row chunks: CPU inference only (on a GPU each chunk is more kernel launches)."""

from __future__ import annotations

import torch

from fcasearch.models import build_model, fuse_for_inference, get_spec
from fcasearch.models.layers import HIDDEN_CHUNK, in_row_chunks


def _count(x: torch.Tensor) -> tuple[int, torch.Tensor]:
    seen = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.shape)
        return t * 2

    out = in_row_chunks(fn, x, hidden=HIDDEN_CHUNK // 10)  # chunks of 10 rows
    return len(seen), out


def test_cpu_inference_runs_in_chunks_with_the_same_result():
    x = torch.randn(4, 8, 3)  # 32 rows
    with torch.inference_mode():
        n, out = _count(x)
    assert n == 4 and torch.equal(out, x * 2)


def test_training_and_other_devices_run_in_one_call():
    x = torch.randn(4, 8, 3, requires_grad=True)
    n, out = _count(x)  # autograd on: one call, and gradients flow
    assert n == 1 and torch.equal(out, x * 2)
    out.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))
    with torch.inference_mode():
        assert _count(torch.randn(4, 8, 3, device="meta"))[0] == 1


def _linear_calls(model: torch.nn.Module, x: torch.Tensor) -> int:
    calls = []
    hooks = [
        m.register_forward_hook(lambda *a: calls.append(1))
        for m in model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return len(calls)


def test_l1_off_the_cpu_launches_the_same_layers_at_any_batch():
    """The GPU regression this guards: L1 at batch 64 on an H200 ran 17x the GEMMs of batch 1."""
    with torch.device("meta"):
        model = fuse_for_inference(build_model(get_spec("fcaformer_l1")).eval())
        one = _linear_calls(model, torch.empty(1, 3, 224, 224))
        many = _linear_calls(model, torch.empty(64, 3, 224, 224))
    assert one == many
    small = fuse_for_inference(build_model(get_spec("fcaformer_l1", img_size=64)).eval())
    assert _linear_calls(small, torch.randn(32, 3, 64, 64)) > one  # on the CPU it does chunk
