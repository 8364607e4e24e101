"""bench/model_speed.py: the GEMM recorder behind its "Linear GEMMs" line, and a smoke run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from fcasearch.models import build_model, get_spec
from fcasearch.spec import CONV, ArchSpec

BENCH = Path(__file__).resolve().parents[2] / "bench" / "model_speed.py"


def _bench() -> ModuleType:
    loader = importlib.util.spec_from_file_location("model_speed", BENCH)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _linear_macs(spec: ArchSpec, batch: int) -> int:
    """MACs of the Linear layers alone (fcaformer-spec.md; queries of cross tokens not computed)."""
    total = spec.stages[-1].width * spec.num_classes  # head
    for s, st in enumerate(spec.stages):
        rh, rw = spec.grid(s)
        n, d = rh * rw, st.width
        for b in range(st.depth):
            if st.kind == CONV:
                total += n * 2 * d * st.hidden  # pwconv1, pwconv2
            else:
                t = n + spec.cross_tokens(s, b)
                total += n * d * d + t * 2 * d * d + n * d * d + n * 2 * d * st.hidden
    return batch * total


@pytest.mark.parametrize("batch", [1, 2])
def test_gemm_recorder_sees_every_linear_product_of_a_forward(batch: int) -> None:
    bench = _bench()
    spec = get_spec("fcaformer_l1", img_size=64)
    model = build_model(spec).eval()
    with torch.inference_mode(), bench.GemmShapes() as recorder:
        model(torch.randn(batch, 3, 64, 64))
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    # a block with cross tokens splits its qkv Linear into queries (main tokens) and keys/values
    split = sum(
        spec.cross_tokens(s, b) > 0
        for s, st in enumerate(spec.stages)
        if st.kind != CONV
        for b in range(st.depth)
    )
    assert len(recorder.shapes) == linears + split
    assert sum(m * k * n for m, k, n in recorder.shapes) == _linear_macs(spec, batch)


def test_linear_gemms_time_each_library_alone_and_in_sequence() -> None:
    bench = _bench()
    gemms = bench.LinearGemms([(8, 16, 32), (8, 32, 16)])
    alone, in_sequence = gemms.alone(reps=2), gemms.in_sequence(reps=2)
    assert gemms.count == 2
    assert set(in_sequence) == set(alone) - {"best"} and "torch.mm" in in_sequence
    assert all(t > 0 for t in [*alone.values(), *in_sequence.values()])
    assert alone["best"] <= min(t for lib, t in alone.items() if lib != "best")


@pytest.mark.slow
def test_quick_run_prints_the_ratio_and_gemm_lines() -> None:
    cmd = [sys.executable, str(BENCH), "--quick", "--compiled", "none", "--no-reference"]
    done = subprocess.run(
        [*cmd, "--models", "L1"], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("L1 b1 fp32 64:") and "target <= 1.6x" in line for line in lines)
    assert any(line.startswith("float32 GEMM 512x512:") and "torch.mm" in line for line in lines)
    assert any(
        line.startswith("L1 b1, its ") and "back to back" in line and "leaves at most" in line
        for line in lines
    )


@pytest.mark.slow
def test_kernel_choices_are_timed_side_by_side() -> None:
    cmd = [sys.executable, str(BENCH), "--quick", "--compiled", "none", "--no-reference"]
    done = subprocess.run(
        [*cmd, "--models", "L1", "--batches", "1", "--kernels", "off", "auto"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "L1/kernels-off:" in out and "on library operators (SDPA, oneDNN)" in out
    assert "L1/kernels-auto:" in out
    assert "L1/kernels-off b1 fp32 64:" in out and "L1/kernels-auto b1 fp32 64:" in out
    # the second choice against the first, round by round
    paired = [line for line in out.splitlines() if " against " in line]
    assert len(paired) == 1
    assert paired[0].startswith("L1/kernels-auto b1 against L1/kernels-off: time ratio ")
