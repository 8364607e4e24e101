"""measure_cost: the metrics contract, closed form without a build, OOM/unsupported handling,
runtimes side by side."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import fcasearch.measure.cost as cost_mod
from fcasearch.measure import (
    METRIC_KEYS,
    CostResult,
    count_macs,
    count_params,
    measure_cost,
    measure_costs,
)
from fcasearch.models import build_model, get_spec

FAST = {"warmup": 1, "min_repeats": 3, "max_repeats": 8, "max_seconds": 0.5, "retries": 0}
TRIALS_COLUMNS = {
    "params", "macs", "latency_ms", "latency_p90_ms", "latency_cv", "throughput_ips",
    "peak_mem_mb", "train_mem_mb", "energy_mj_per_image",
}  # fmt: skip


@pytest.fixture(scope="module")
def nano():
    return get_spec("fcaformer_nano", img_size=32, num_classes=10)


def test_full_measurement_of_a_tiny_spec_on_cpu(nano):
    res = measure_cost(nano, batch_size=2, threads=1, **FAST)
    assert isinstance(res, CostResult) and res.ok and res.reason == ""
    assert set(res.metrics) == TRIALS_COLUMNS | {"weights_mb", "latency_stable"} == set(METRIC_KEYS)
    m = res.metrics
    assert m["params"] == count_params(nano) and m["macs"] == count_macs(nano)
    assert m["latency_ms"] > 0 and m["latency_p90_ms"] >= m["latency_ms"] and m["latency_cv"] >= 0
    assert m["throughput_ips"] == pytest.approx(2000.0 / m["latency_ms"])
    assert m["latency_cv"] == pytest.approx(res.latency.robust_cv)
    assert m["latency_stable"] == float(res.latency.stable) and res.latency.attempts == 1
    assert 0 < m["weights_mb"] < m["peak_mem_mb"] < m["train_mem_mb"]
    assert math.isnan(m["energy_mj_per_image"])
    assert res.notes["energy"].startswith("unavailable: device is cpu")
    assert "fuse_for_inference" in res.notes["deployable"]
    assert "profile_memory" in res.notes["peak_mem"] and "AdamW" in res.notes["train_mem"]
    assert res.fingerprint["threads"] == 1 and len(res.fingerprint_id) == 12
    assert res.arch_id == nano.arch_id and res.latency is not None and 3 <= res.latency.n <= 8
    assert res.runtime == "eager" and res.runtime_version == f"torch {torch.__version__}"
    assert "PyTorch eager" in res.notes["runtime"] and "robust CV" in res.notes["latency"]
    row = res.to_row()
    assert (
        row["status"] == "ok"
        and row["fingerprint_id"] == res.fingerprint_id
        and "latency:" in row["notes"]
    )
    assert row["runtime"] == "eager" and row["runtime_version"] == res.runtime_version
    assert row["threads"] == 1 and row["latency_stable"] is res.latency.stable


def test_closed_form_only_builds_nothing(nano, monkeypatch):
    def no_build(spec):
        raise AssertionError("a model was built")

    monkeypatch.setattr(cost_mod, "build_for_spec", no_build)
    res = measure_cost(nano, latency=False, memory=False, energy=False)
    assert res.ok and res.metrics["params"] == count_params(nano)
    assert math.isnan(res.metrics["latency_ms"]) and math.isnan(res.metrics["peak_mem_mb"])
    assert res.metrics["weights_mb"] == pytest.approx(count_params(nano) * 4 / 2**20)
    assert res.notes["latency"] == "not measured (latency=False)"
    assert res.latency_stable is None and res.to_row()["latency_stable"] is None


def test_plain_module_is_counted_by_fvcore_and_left_untouched():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 16 * 16, 10)
    )
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = measure_cost(model, img_size=16, batch_size=2, energy=False, **FAST)
    assert res.ok and res.arch_id is None
    assert res.metrics["params"] == sum(p.numel() for p in model.parameters())
    assert res.metrics["macs"] == 16 * 16 * 8 * 27 + 8 * 16 * 16 * 10
    assert "fvcore" in res.notes["macs"]
    assert model.training  # the caller's module keeps its mode and weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_built_fcaformer_module_uses_its_spec(nano):
    model = build_model(nano)
    res = measure_cost(model, latency=False, memory=False, energy=False)
    assert res.metrics["macs"] == count_macs(nano) and res.arch_id == nano.arch_id
    assert "closed form" in res.notes["macs"]


def test_bf16_halves_the_weights(nano):
    fp32 = measure_cost(nano, memory=False, energy=False, **FAST)
    bf16 = measure_cost(nano, dtype="bf16", memory=False, energy=False, **FAST)
    assert bf16.ok and bf16.dtype == "bf16"
    assert 0.45 < bf16.metrics["weights_mb"] / fp32.metrics["weights_mb"] < 0.55  # int buffers stay


class Raises(nn.Module):
    """Raises ``exc`` in eval mode for batches above one or in half precision."""

    def __init__(self, exc: BaseException):
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.exc = exc

    def forward(self, x):
        if not self.training and (x.shape[0] > 1 or x.dtype == torch.float16):
            raise self.exc
        return self.lin(x.flatten(1)[:, :4])


def test_out_of_memory_is_a_status_not_a_crash():
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    res = measure_cost(Raises(oom), img_size=4, batch_size=512, energy=False, **FAST)
    assert res.status == "oom" and not res.ok
    assert res.reason.startswith("out of memory at batch size 512")
    assert res.metrics["params"] == 10 and math.isnan(res.metrics["latency_ms"])
    assert res.metrics["train_mem_mb"] > 0  # measured before inference ran out


def test_missing_kernel_is_unsupported():
    exc = RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'")
    res = measure_cost(Raises(exc), img_size=4, dtype="fp16", energy=False, memory=False, **FAST)
    assert res.status == "unsupported" and "fp16 on cpu" in res.reason


def test_other_errors_propagate():
    with pytest.raises(KeyError):
        measure_cost(
            Raises(KeyError("bug")), img_size=4, batch_size=2, energy=False, memory=False, **FAST
        )


class Untraceable(nn.Linear):
    def forward(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError("data-dependent control flow")
        return super().forward(x.flatten(1)[:, :4])


def test_untraceable_module_keeps_measuring():
    res = measure_cost(Untraceable(4, 2), img_size=4, memory=False, energy=False, **FAST)
    assert res.ok and res.metrics["params"] == 10 and res.metrics["latency_ms"] > 0
    assert math.isnan(res.metrics["macs"]) and "fvcore failed" in res.notes["macs"]


@pytest.mark.parametrize(
    "kwargs, field",
    [({"dtype": "fp8"}, "dtype"), ({"batch_size": 0}, "batch_size"), ({"device": "tpu"}, "device")],
)
def test_bad_arguments_name_the_field(nano, kwargs, field):
    with pytest.raises(ValueError, match=field):
        measure_cost(nano, **kwargs)


def test_not_a_model_is_refused():
    with pytest.raises(ValueError, match="spec_or_model"):
        measure_cost({"stages": []})


def test_one_runtime_is_timed_without_untimed_runs_between(nano):
    # the settling run is for runtimes side by side; alone, each timed run follows its own
    res = measure_cost(nano, energy=False, memory=False, **FAST)
    assert res.ok and "untimed" not in res.latency.method


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_gpu_says_why(nano):
    with pytest.raises(ValueError, match=r"device: 'cuda'.*use --device cpu"):
        measure_cost(nano, device="cuda")


@pytest.mark.gpu
def test_cuda_measurement(nano):
    res = measure_cost(nano, device="cuda", batch_size=4, energy_seconds=0.3, **FAST)
    assert res.ok and res.metrics["latency_ms"] > 0 and res.metrics["peak_mem_mb"] > 0
    assert res.fingerprint["gpu_name"] and "cuda events" in res.notes["latency"]
    # energy is measured wherever NVML starts (the lent GPU machines have a driver)
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        assert res.notes["energy"].startswith("unavailable: ")
    else:
        pynvml.nvmlShutdown()
        assert res.notes["energy"].startswith("nvml"), res.notes["energy"]
        assert res.metrics["energy_mj_per_image"] > 0 and res.energy.avg_power_w > 0


@pytest.mark.gpu
def test_cuda_out_of_memory_is_reported():
    spec = get_spec("fcaformer_l1")
    free, _total = torch.cuda.mem_get_info()
    batch = int(free / (3 * 224 * 224 * 4)) + 1  # the input alone does not fit
    # latency on: with nothing to measure no model is built and no input allocated
    res = measure_cost(spec, device="cuda", batch_size=batch, energy=False, memory=False, **FAST)
    assert res.status == "oom" and "out of memory" in res.reason
    assert res.metrics["params"] == 6_187_560 and math.isnan(res.metrics["latency_ms"])


def test_batch_of_one_reaching_a_1x1_map_still_gets_training_memory(nano):
    res = measure_cost(nano, batch_size=1, latency=False, energy=False)
    assert res.ok and res.metrics["train_mem_mb"] > 0
    assert "BatchNorm layers in eval mode" in res.notes["train_mem"]


def test_fused_module_gets_inference_numbers_only(nano):
    from fcasearch.models import fuse_for_inference

    res = measure_cost(fuse_for_inference(build_model(nano)), latency=False, energy=False)
    assert res.ok and res.metrics["peak_mem_mb"] > 0 and math.isnan(res.metrics["train_mem_mb"])
    assert res.notes["train_mem"] == "not measured: the module is already fused for inference"


def test_compile_flag_is_now_a_runtime(nano):
    with pytest.raises(ValueError, match="runtime='compile'"):
        measure_cost(nano, compile=True)


def test_unknown_runtime_names_the_known_ones(nano):
    with pytest.raises(ValueError, match="eager, compile, onnxruntime, tensorrt"):
        measure_cost(nano, runtime="tvm")


def test_only_the_timed_runs_hold_the_exclusive_section(exclusive_section):
    # a search passes its device lock: trainers must pause for the timing, not for an export
    forwards: list[bool] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            forwards.append(exclusive_section.inside)
            return self.conv(x).mean((2, 3))

    eager, onnx = measure_costs(
        Probe(),
        runtimes=("eager", "onnxruntime"),
        img_size=16,
        threads=1,
        energy=False,
        exclusive=exclusive_section,
        **FAST,
    )
    assert eager.ok and onnx.ok, (eager.reason, onnx.reason)
    assert exclusive_section.entered == 1
    # inside: eager's warm-up, timed runs and the untimed run right before each timed one (two
    # runtimes side by side), nothing else (ONNX Runtime runs its own graph)
    assert "1 untimed run(s) right before each timed one" in eager.latency.method
    assert forwards.count(True) == eager.latency.warmup + 2 * eager.latency.n
    # outside: training-step memory, eager's first call, the export's trace, the checks
    assert forwards.count(False) >= 4
    assert "exported by torch.onnx" in onnx.notes["runtime"]


def test_eagers_linear_probe_also_times_in_the_exclusive_section(exclusive_section):
    # 2 threads and a Linear the rule would convert: the probe times inside the section too

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(192, 768)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 16, 16) -> 256 tokens
            return self.fc(x.flatten(2).transpose(1, 2).repeat(1, 1, 64)).mean(1)

    res = measure_cost(
        Tokens(), img_size=16, threads=2, energy=False, exclusive=exclusive_section, **FAST
    )
    assert res.ok, res.reason
    assert "a probe on this CPU timed them" in res.notes["runtime"]
    assert " of 1 shapes" in res.notes["runtime"], res.notes["runtime"]
    assert exclusive_section.entered == 2  # the probe, then the timed runs
    # the preparation's time, in all and for the probe (the folding before it is the rest)
    assert set(res.setup) == {"total", "probe"} and 0 < res.setup["probe"] <= res.setup["total"]
    assert "s to prepare eager (of it probe " in res.notes["setup"]
