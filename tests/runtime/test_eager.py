"""The eager runtime: the folded model under inference mode, the reference for all others."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcasearch.measure.prepare import build_for_spec
from fcasearch.models import calibrate_batchnorm, get_spec
from fcasearch.runtime import eager, get_runtime, inference_form
from fcasearch.runtime.eager import ConvLinear, linear, probe_linears, use_conv


def test_eager_folds_an_fcaformer_and_computes_the_same_function():
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=5)
    model = build_for_spec(spec)  # trained-like layer scales: every block shapes the output
    model = calibrate_batchnorm(model, generator=torch.Generator().manual_seed(0))
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


# Large Linear layers as 1x1 convolutions in CPU inference (fcasearch.runtime.eager)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _conv_calls(monkeypatch) -> list[tuple[int, ...]]:
    calls: list[tuple[int, ...]] = []
    real = F.conv2d

    def spy(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(F, "conv2d", spy)
    return calls


def test_a_large_linear_runs_as_a_convolution_with_the_same_result(two_threads, monkeypatch):
    calls = _conv_calls(monkeypatch)
    x, w, b = torch.randn(2, 100, 192), torch.randn(768, 192), torch.randn(768)
    with torch.inference_mode():
        assert use_conv(x, 768)  # 200 rows, 29.5M multiply-adds
        got = linear(x, w, b)
        want = F.linear(x, w, b)
    assert calls == [(1, 192, 200, 1)] and got.shape == (2, 100, 768)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():  # without bias, and a 2-D input
        flat = x.reshape(200, 192)
        torch.testing.assert_close(linear(flat, w, None), F.linear(flat, w), rtol=1e-5, atol=1e-5)
        wt = torch.randn(192, 768).t()  # a weight that is a transposed view
        torch.testing.assert_close(linear(x, wt, b), F.linear(x, wt, b), rtol=1e-5, atol=1e-5)
    assert calls == [(1, 192, 200, 1)] * 3


@pytest.mark.parametrize(
    ("case", "x", "out"),
    [
        ("too few rows", torch.randn(1, 100, 192), 768),  # 100 rows
        ("too little work", torch.randn(1, 256, 64), 64),  # 1M multiply-adds
        ("float64", torch.randn(1, 256, 192, dtype=torch.float64), 768),
        ("bfloat16", torch.randn(1, 256, 192, dtype=torch.bfloat16), 768),
        ("meta device", torch.empty(1, 256, 192, device="meta"), 768),
    ],
)
def test_where_a_linear_stays_on_the_sgemm(case, x, out, two_threads):
    with torch.inference_mode():
        assert not use_conv(x, out), case


def test_autocast_keeps_the_sgemm(two_threads):
    x = torch.randn(1, 256, 192)
    with torch.inference_mode():
        assert use_conv(x, 768)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not use_conv(x, 768)


def test_training_one_thread_and_tracing_keep_the_sgemm(monkeypatch):
    x = torch.randn(1, 256, 192)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not use_conv(x, 768)  # autograd on: training is never converted
        with torch.no_grad():
            assert use_conv(x, 768)
            layer = ConvLinear.sharing(nn.Linear(192, 768))
            traced = torch.jit.trace(layer, x)  # fvcore counts and the ONNX export trace
        kinds = {n.kind() for n in traced.graph.nodes()}
        assert "aten::linear" in kinds and "aten::_convolution" not in kinds
        torch.set_num_threads(1)
        with torch.no_grad():
            assert not use_conv(x, 768)
    finally:
        torch.set_num_threads(before)


def test_compiling_sees_the_linear(two_threads):
    """torch.compile (and export) trace F.linear, so Inductor and the exporters get the graph they
    know; only eager execution takes the convolution."""
    seen: list[str] = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    layer = ConvLinear.sharing(nn.Linear(192, 768))
    with torch.no_grad():
        torch.compile(layer, backend=backend, fullgraph=True)(torch.randn(1, 256, 192))
    assert any("linear" in t for t in seen) and not any("conv" in t for t in seen), seen


def test_the_eager_runtime_converts_linears_and_shares_their_parameters(two_threads, monkeypatch):
    monkeypatch.setattr(eager, "PROBE_MARGIN", 0.0)  # whatever the probe times, convert
    model = nn.Sequential(nn.Linear(192, 768), nn.GELU(), nn.Linear(768, 192), nn.Linear(192, 3))
    x = torch.randn(1, 300, 192)
    with torch.inference_mode():
        want = model(x)
    weight, keys = model[0].weight, list(model.state_dict())
    prepared = get_runtime("eager").prepare(model, x)
    assert all(type(m) is ConvLinear for m in (model[0], model[2], model[3]))
    assert model[0].weight is weight and list(model.state_dict()) == keys
    assert "1x1 convolutions (oneDNN)" in prepared.note and "2 of 2 shapes" in prepared.note
    calls = _conv_calls(monkeypatch)
    torch.testing.assert_close(prepared(x), want, rtol=1e-5, atol=1e-5)
    assert len(calls) == 2  # the two large layers; 300x192 by 192x3 stays on the sgemm

    plain = nn.Sequential(nn.Linear(192, 768))
    prepared = get_runtime("eager", pointwise_conv=False).prepare(plain, x)
    assert type(plain[0]) is nn.Linear and "1x1" not in prepared.note
    with pytest.raises(ValueError, match="pointwise_conv"):
        get_runtime("eager", pointwise_conv="yes")


def _slowed(monkeypatch, name: str) -> None:
    """Make ``F.<name>`` take 10 ms longer per call (far more than a 300-row product takes)."""
    real = getattr(F, name)

    def slow(*args, **kwargs):
        time.sleep(0.01)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, name, slow)


@pytest.mark.parametrize("slowed", ["conv2d", "linear"])
def test_the_probe_keeps_the_form_that_times_faster_on_this_cpu(slowed, two_threads, monkeypatch):
    model = nn.Sequential(nn.Linear(192, 768), nn.GELU(), nn.Linear(768, 192))
    x = torch.randn(1, 300, 192)
    with torch.inference_mode():
        want = model(x)
    _slowed(monkeypatch, slowed)
    prepared = get_runtime("eager").prepare(model, x)
    monkeypatch.undo()
    conv = slowed == "linear"
    assert model[0].sgemm_rows == model[2].sgemm_rows == (frozenset() if conv else {300})
    note = "2 of 2 shapes (" if conv else "0 of 2 shapes; 2 kept on the sgemm ("
    assert note in prepared.note, prepared.note
    calls = _conv_calls(monkeypatch)
    torch.testing.assert_close(prepared(x), want, rtol=1e-5, atol=1e-5)
    assert len(calls) == (2 if conv else 0)
    # prepared again with the other form slowed: the new verdict replaces the old one
    monkeypatch.undo()
    _slowed(monkeypatch, "linear" if slowed == "conv2d" else "conv2d")
    prepared = get_runtime("eager").prepare(model, x)
    assert model[0].sgemm_rows == (frozenset() if not conv else {300}), prepared.note


def test_the_probe_times_each_shape_once_and_not_on_one_thread(monkeypatch):
    model = nn.Sequential(nn.Linear(192, 768), nn.GELU(), nn.Linear(768, 768), nn.Linear(768, 768))
    eager.convert_linears(model.eval())
    x = torch.randn(1, 300, 192)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        probes = probe_linears(model, x, runs=3)
        assert [(p.rows, p.in_features, p.out_features, p.layers) for p in probes] == [
            (300, 192, 768, 1),
            (300, 768, 768, 2),
        ]
        assert all(p.sgemm_ms > 0 and p.conv_ms > 0 for p in probes)
        torch.set_num_threads(1)
        forwards = []
        model.register_forward_pre_hook(lambda *_: forwards.append(1))
        assert probe_linears(model, x) == [] and forwards == []  # one thread: nothing converts
    finally:
        torch.set_num_threads(before)


def test_the_probe_times_inside_the_exclusive_section_only(
    two_threads, monkeypatch, exclusive_section
):
    # a search passes its device lock: no trainer may run beside the probe's timed calls, and
    # trainers should not wait for the untimed forward that finds the shapes
    seen: list[tuple[str, bool]] = []

    for name in ("linear", "conv2d"):
        real = getattr(F, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.append((_name, exclusive_section.inside))
            return _real(*args, **kwargs)

        monkeypatch.setattr(F, name, spy)
    model = nn.Sequential(nn.Linear(192, 768), nn.GELU(), nn.Linear(768, 192))
    x = torch.randn(1, 300, 192)
    prepared = get_runtime("eager").prepare(model, x, exclusive=exclusive_section)
    assert exclusive_section.entered == 1, "the probe's two shapes are timed in one section"
    timed = [inside for _, inside in seen]
    # both forms of both shapes, 2 warm-up and PROBE_RUNS timed calls each, all inside
    assert timed.count(True) == 2 * 2 * (eager.PROBE_RUNS + 2)
    assert {name for name, inside in seen if inside} == {"linear", "conv2d"}
    assert timed[:2] == [False, False], "the forward that finds the shapes runs outside"
    seen.clear()
    prepared(x)
    assert seen and not any(inside for _, inside in seen)
    # nothing to time (one thread): the section is not entered at all
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(192, 768))
    get_runtime("eager").prepare(model, x, exclusive=exclusive_section)
    assert exclusive_section.entered == 1


class _KeywordCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(192, 768)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(input=x)


def test_the_probe_sees_a_layer_called_by_keyword(two_threads):
    model = _KeywordCall().eval()
    eager.convert_linears(model)
    (probe,) = probe_linears(model, torch.randn(1, 300, 192), runs=1)
    assert (probe.rows, probe.in_features, probe.out_features) == (300, 192, 768)


def test_the_note_says_why_nothing_converted():
    model = nn.Sequential(nn.Linear(192, 768))
    x = torch.randn(1, 300, 192)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert "none converted (one thread)" in get_runtime("eager").prepare(model, x).note
        torch.set_num_threads(2)
        note = get_runtime("eager").prepare(model, x.double()).note
        assert "none converted (torch.float64 is not float32)" in note
    finally:
        torch.set_num_threads(before)


def test_the_onnx_export_of_a_converted_model_has_no_convolution(two_threads):
    onnx = pytest.importorskip("onnx")
    import io

    layer = ConvLinear.sharing(nn.Linear(192, 768))
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(layer, (torch.randn(1, 256, 192),), buf, dynamo=False)
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert "Conv" not in ops and ops & {"MatMul", "Gemm"}, ops
