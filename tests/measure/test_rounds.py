"""measure_rounds: every model timed once per round for exactly the rounds asked, on one runtime;
a model the runtime cannot run gets a status and no number."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcasearch.measure.rounds import RoundTarget, measure_rounds
from fcasearch.models.registry import get_spec


def _tiny():
    return get_spec("fcaformer_nano", img_size=32, num_classes=10)


def test_every_model_runs_every_round():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    targets = {"spec": RoundTarget(_tiny()), "module": RoundTarget(conv, (16, 16), 3)}
    got = measure_rounds(targets, rounds=4, threads=1, cv_threshold=10.0)
    assert list(got) == ["spec", "module"]
    for res in got.values():
        assert res.status == "ok" and res.latency.n == 4 and res.latency.attempts == 1
        assert "interleaved with 1 other(s)" in res.latency.method
        assert "1 untimed run(s) right before each timed one" in res.latency.method  # settle
        row = res.to_dict()
        assert row["latency_ms"] > 0 and row["rounds"] == 4 and row["latency_stable"] is True
        assert row["runtime_version"].startswith("torch ")
    assert conv[0].weight.dtype == torch.float32  # the caller's module is not touched


def test_unstable_models_are_measured_again_with_more_rounds():
    got = measure_rounds(
        {"m": RoundTarget(_tiny())}, rounds=3, threads=1, cv_threshold=1e-12, backoff_s=0.0
    )
    s = got["m"].latency
    assert s.attempts == 3 and not s.stable and s.n >= 3


def test_a_model_the_runtime_cannot_run_has_no_number():
    got = measure_rounds(
        {"m": RoundTarget(_tiny())}, runtime="onnxruntime", dtype="bf16", rounds=2, threads=1
    )
    row = got["m"].to_dict()
    assert row["status"] == "unsupported" and "onnxruntime" in row["reason"]
    assert row["latency_ms"] != row["latency_ms"] and row["latency_stable"] is None  # NaN


@pytest.mark.gpu
def test_rounds_on_cuda_use_events():
    targets = {"a": RoundTarget(_tiny()), "b": RoundTarget(get_spec("fcaformer_l1"))}
    got = measure_rounds(targets, device="cuda", rounds=5, batch_size=4)
    for res in got.values():
        assert res.status == "ok" and res.latency.n >= 5 and "cuda events" in res.latency.method
    assert got["b"].latency.median_ms > got["a"].latency.median_ms  # L1 at 224 px vs nano at 32
