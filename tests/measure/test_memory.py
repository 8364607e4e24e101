"""Peak memory: CPU through the profiler's allocation events, CUDA through the allocator stats."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcasearch.measure.memory import MIB, peak_memory, tensor_bytes


def test_tensor_bytes_counts_shared_storage_once():
    a = torch.zeros(100)  # 400 bytes
    assert (
        tensor_bytes([a, a[:10], a.view(10, 10), torch.zeros(5, dtype=torch.float16)]) == 400 + 10
    )


def test_cpu_inference_peak_covers_the_activations():
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 16)).eval()
    x = torch.randn(32, 512)
    resident = [*model.parameters(), x]
    with torch.inference_mode():
        mp = peak_memory(lambda: model(x), resident)
    assert mp.resident_mb == pytest.approx(tensor_bytes(resident) / MIB)
    hidden = 32 * 1024 * 4  # the (32, 1024) fp32 activation must exist at some point
    assert mp.transient_mb * MIB >= hidden
    assert mp.transient_mb * MIB < 10 * hidden  # and nothing wildly larger
    assert mp.peak_mb == pytest.approx(mp.resident_mb + mp.transient_mb)
    assert "profile_memory" in mp.method


def test_cpu_training_step_peak_includes_gradients():
    model = nn.Linear(256, 256)
    x = torch.randn(8, 256)

    def step():
        model(x).square().mean().backward()

    mp = peak_memory(step, [*model.parameters(), x])
    grads = sum(p.numel() * 4 for p in model.parameters())
    assert mp.transient_mb * MIB >= grads  # gradients are allocated by the autograd thread


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device"):
        peak_memory(lambda: None, device="meta")


@pytest.mark.gpu
def test_cuda_peak_memory():
    model = nn.Linear(1024, 1024).cuda().eval()
    x = torch.randn(256, 1024, device="cuda")
    with torch.inference_mode():
        mp = peak_memory(lambda: model(x), [*model.parameters(), x], device="cuda")
    assert mp.transient_mb * MIB >= 256 * 1024 * 4
    assert "max_memory_allocated" in mp.method
