"""bench/reference_forward.py computes the model's function; bench/model_speed.py and
bench/measure_cost.py run and print."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from fcasearch.models import build_model, get_spec, to_reference_state_dict
from fcasearch.spec import ArchSpec, StageSpec

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    loader = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _randomized(spec: ArchSpec) -> torch.nn.Module:
    """A model in eval mode whose every parameter and BN statistic is away from its init."""
    model = build_model(spec).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var") or name.endswith(("gamma", "gamma_1", "gamma_2")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.2)
    return model


@pytest.mark.parametrize(
    "spec",
    [
        get_spec("fcaformer_tiny", img_size=64, num_classes=7),
        ArchSpec(
            (StageSpec("conv", 1, 16),
             StageSpec("fca", 4, 24, 3, merge_stride=2, cross_window=2, scale_factors=False),
             StageSpec("fca", 3, 32, 2, enhancement=False, cross_bias=False)),
            img_size=(64, 32), num_classes=5,
        ),
    ],
    ids=["paper-structure", "switches"],
)  # fmt: skip
def test_reference_forward_computes_the_models_function(spec: ArchSpec) -> None:
    model = _randomized(spec)
    forward = _load("reference_forward").reference_forward(spec, to_reference_state_dict(model))
    x = torch.randn(2, spec.in_chans, *spec.img_size)
    with torch.inference_mode():
        want = model(x)
        got = forward(x)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_quick_run_prints_a_ratio_line_per_runtime_with_the_cpu() -> None:
    cmd = [sys.executable, str(BENCH / "model_speed.py"), "--quick", "--models", "L1"]
    out = subprocess.run(
        [*cmd, "--batches", "1", "--threads", "1", "--runtimes", "eager,onnxruntime", "--ops"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    assert "L1 b1: onnxruntime: onnxruntime " in out and "max |diff| vs eager" in out
    lines = [line for line in out.splitlines() if line.startswith("L1 b1 fp32 64px 1 threads")]
    eager, ort, sgemm = lines
    assert "| eager " in eager and "vs reference-style" in eager and "target >= 1.3x" in eager
    assert "| onnxruntime " in ort and "| vs eager: " in ort
    assert "| eager-sgemm " in sgemm and "| vs eager: " in sgemm and "pointwise_conv=False" in sgemm
    assert all("| CPU " in line for line in lines)
    # --ops: each form's profiled time per op kind, side by side
    ops = [
        line[len("L1 b1 ops: ") :] for line in out.splitlines() if line.startswith("L1 b1 ops: ")
    ]
    assert ops[0].split()[-3:] == ["eager", "eager-sgemm", "reference-style"]
    totals = [float(v) for v in ops[1].split()[-3:]]
    assert ops[1].startswith("all ops") and all(t > 0 for t in totals)
    assert len(ops) > 3 and all(line.startswith("aten::") for line in ops[2:])


@pytest.mark.slow
def test_measure_cost_bench_prints_each_runtimes_share_of_a_trial(capsys) -> None:
    bench = _load("measure_cost")
    bench.runtime_costs(["eager", "onnxruntime"], n_specs=1, threads=1, device="cpu")
    out = capsys.readouterr().out
    assert "2-epoch micro trial (digits, 32 px, 1 thread(s)): median" in out
    for name in ("eager", "onnxruntime"):
        (line,) = [ln for ln in out.splitlines() if ln.startswith(f"  {name}: ")]
        assert "s per trial's latency measurement" in line and "status ok" in line
        assert "of the 2-epoch trial trained just before it" in line and "(target < 10%)" in line
        assert re.search(r"held the device exclusively \(trainers on it paused\) \d+ ms$", line)
    # where ONNX Runtime's preparation went; eager probes nothing on one thread: no such line
    (steps,) = [ln for ln in out.splitlines() if "preparing the model" in ln]
    assert re.fullmatch(
        r"    onnxruntime preparing the model: total [\d.]+ ms \(export [\d.]+ ms, session [\d.]+ ms\)",
        steps,
    ), steps
