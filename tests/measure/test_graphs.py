"""CUDA graph replay for latency: captured once, equal outputs, clear errors where it cannot run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fcasearch.measure import capture_cuda_graph, measure_cost, profile_grid
from fcasearch.measure.prepare import build_for_spec
from fcasearch.measure.profile import resolve_target
from fcasearch.models import calibrate_batchnorm, get_spec

FAST = {"warmup": 1, "min_repeats": 3, "max_repeats": 8, "max_seconds": 0.5}


@pytest.fixture(scope="module")
def nano():
    return get_spec("fcaformer_nano", img_size=32, num_classes=10)


def test_graphs_need_cuda(nano):
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        capture_cuda_graph(lambda: torch.zeros(1), "cpu")
    with pytest.raises(ValueError, match="without --cuda-graph"):
        measure_cost(nano, device="cpu", cuda_graph=True)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        profile_grid([resolve_target("fcaformer_nano")], device="cpu", cuda_graph=True)


@pytest.mark.gpu
def test_replay_computes_the_forward_on_the_captured_input(nano):
    # trained-like values and calibrated BN: outputs of order 1 (fresh ones are about 1e-18,
    # where any replay, zeros or a stale output would pass an atol check)
    model = calibrate_batchnorm(build_for_spec(nano), generator=torch.Generator().manual_seed(0))
    model = model.cuda().eval()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    with torch.inference_mode():
        replay = capture_cuda_graph(lambda: model(x), "cuda")
        before = model(x).clone()
        x.copy_(torch.randn_like(x))  # a replay reads the captured input's current values
        out = replay().clone()
        want = model(x)
    assert want.abs().max() > 0.1 and not torch.allclose(before, want, atol=1e-3)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_measure_cost_times_a_graph_replay(nano):
    res = measure_cost(
        nano, device="cuda", batch_size=2, cuda_graph=True, energy_seconds=0.3, **FAST
    )
    assert res.ok and res.metrics["latency_ms"] > 0 and res.metrics["peak_mem_mb"] > 0
    assert "CUDA graph replay" in res.notes["latency"] and "cuda_graph" in res.notes
    plain = measure_cost(nano, device="cuda", batch_size=2, memory=False, energy=False, **FAST)
    assert "CUDA graph" not in plain.notes["latency"]


_SYNCING_CAPTURE = """
import torch
from fcasearch.measure import CudaGraphError, capture_cuda_graph
lin, x = torch.nn.Linear(8, 8).cuda(), torch.randn(4, 8, device="cuda")
def syncing():
    y = lin(x)
    return y * float(y.sum().item())  # a device-to-host copy inside the forward
try:
    with torch.inference_mode():
        capture_cuda_graph(syncing, "cuda")
except CudaGraphError as exc:
    print("CudaGraphError:", exc)
"""


@pytest.mark.gpu
def test_a_forward_that_syncs_cannot_be_captured():
    # in a child process: a failed capture must not leave this test process's CUDA state behind
    done = subprocess.run(
        [sys.executable, "-c", _SYNCING_CAPTURE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CudaGraphError:" in done.stdout and "without --cuda-graph" in done.stdout
