"""``measure_cost``: the one call the search makes per candidate, and what it returns.

For an :class:`~fcasearch.spec.ArchSpec`, params and MACs come from the closed form (no model is
built unless latency, memory or energy is asked for); for any other ``nn.Module`` (the torchvision
baselines) params are counted on the module and MACs by fvcore (conv + linear + matmul + attention,
norms excluded, so both use one convention). Then, on the chosen device, dtype and batch size:

1. one training step's peak memory (float32 weights, autocast for bf16/fp16, AdamW; the step
   measured is the second, so the optimizer state exists);
2. the deployable form (Conv-BN folded for FcaFormer, eval), cast to the dtype, optionally
   channels-last and ``torch.compile``; one untimed forward, then inference peak memory;
3. latency (warm-up, repeats until the median is stable or a cap: :mod:`~fcasearch.measure.latency`)
   and throughput, in ``torch.inference_mode``;
4. energy per image over a separate window of back-to-back batches (NVML, CUDA only).

Out of memory ends the measurement with ``status="oom"`` (what was measured before is kept); a dtype
whose kernels are missing gives ``status="unsupported"``. Other errors propagate.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fcasearch.measure.counting import count_macs, count_params
from fcasearch.measure.energy import EnergyResult, measure_energy, unavailable_energy
from fcasearch.measure.fingerprint import fingerprint_id, hardware_fingerprint
from fcasearch.measure.flops import count_flops_fvcore
from fcasearch.measure.graphs import CAPTURE_WARMUP, capture_cuda_graph, check_graph_device
from fcasearch.measure.latency import LatencyStats, cpu_threads, time_callable
from fcasearch.measure.memory import MIB, peak_memory, tensor_bytes
from fcasearch.measure.prepare import (
    build_for_spec,
    cast_for_inference,
    check_device,
    copy_module,
    deployable,
    dtype_unsupported,
    is_oom,
    is_unsupported,
    make_input,
    parse_dtype,
    train_step_fn,
)
from fcasearch.metrics import HARDWARE_METRICS
from fcasearch.spec import ArchSpec

__all__ = ["METRIC_KEYS", "CostResult", "measure_cost"]

# the trials columns of results/README.md that measurement fills, plus weights_mb
METRIC_KEYS = ("params", "macs", *HARDWARE_METRICS, "weights_mb")


@dataclass
class CostResult:
    """What one measurement found.

    Attributes:
        metrics: exactly :data:`METRIC_KEYS`; NaN where not measured or unavailable. ``macs`` is
            per image; latency is of one batch (ms); memory in MiB; energy in mJ per image.
        notes: how each metric was measured, or why it is missing (``energy: unavailable: ...``).
        fingerprint: the hardware fingerprint (:func:`~fcasearch.measure.hardware_fingerprint`).
        status: ``ok``, ``oom`` (out of memory at this batch size) or ``unsupported`` (dtype).
        reason: empty when ok; otherwise the error's first line.
        device: ``cpu`` or ``cuda[:N]``.
        batch_size: images per batch.
        dtype: ``fp32``, ``bf16`` or ``fp16``.
        arch_id: the spec's id (None for a plain module).
        seconds: time the measurement took, s.
        latency: the full latency statistics (None if not measured).
        energy: the full energy result (None if not asked for).
    """

    metrics: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""
    device: str = "cpu"
    batch_size: int = 1
    dtype: str = "fp32"
    arch_id: str | None = None
    seconds: float = 0.0
    latency: LatencyStats | None = None
    energy: EnergyResult | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def fingerprint_id(self) -> str:
        return fingerprint_id(self.fingerprint)

    def to_row(self) -> dict[str, Any]:
        """A flat, JSON-safe row: ids, settings, every metric, status, notes (``key: text`` joined
        by `` | ``), the fingerprint id and the fingerprint as JSON."""
        notes = " | ".join(f"{k}: {v}" for k, v in self.notes.items())
        return {
            "arch_id": self.arch_id or "",
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "device": self.device,
            **self.metrics,
            "avg_power_w": self.energy.avg_power_w if self.energy is not None else math.nan,
            "status": self.status,
            "reason": self.reason,
            "notes": notes,
            "measure_seconds": self.seconds,
            "fingerprint_id": self.fingerprint_id,
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
        }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _pair(img_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(img_size, int) and not isinstance(img_size, bool):
        return img_size, img_size
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2:
        return int(img_size[0]), int(img_size[1])
    raise ValueError(f"img_size: {img_size!r} must be an int or a (height, width) pair")


def _count(
    res: CostResult, spec: ArchSpec | None, model: nn.Module | None, hw, in_chans: int
) -> None:
    m = res.metrics
    if spec is not None:
        m["params"] = float(count_params(spec))
        m["macs"] = float(count_macs(spec))
        res.notes["params"] = "closed form from the spec"
        res.notes["macs"] = (
            "closed form, per image, conv+linear+attention matmuls (1 MAC = 1 multiply-add); "
            "queries of main tokens only (count_macs(spec, reference=True) adds the reference's "
            "cross-token queries)"
        )
        return
    assert model is not None
    m["params"] = float(sum(p.numel() for p in model.parameters()))
    res.notes["params"] = "counted on the module"
    own_spec = getattr(model, "spec", None)
    if isinstance(own_spec, ArchSpec):
        # an FcaFormer built from a spec: its executed MACs are the closed form's (no trace needed)
        m["macs"] = float(count_macs(own_spec))
        res.notes["macs"] = (
            "closed form from the model's spec, per image, conv+linear+attention matmuls"
        )
        res.arch_id = own_spec.arch_id
        return
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        report = count_flops_fvcore(model, torch.zeros(1, in_chans, *hw, device=dev))
    except Exception as exc:  # a module fvcore cannot trace still gets its other metrics
        res.notes["macs"] = f"not counted: fvcore failed on a batch of 1: {_first_line(exc)}"
        return
    m["macs"] = float(report.core_macs)
    res.notes["macs"] = (
        "fvcore trace, per image, conv+linear+matmul+SDPA (norms excluded; 1 MAC = 1 multiply-add); "
        f"uncounted ops: {', '.join(report.uncounted) or 'none'}"
    )


def _train_memory(
    res: CostResult, model: nn.Module, dev, tdtype, hw, in_chans: int, channels_last: bool
) -> None:
    x = make_input(res.batch_size, in_chans, hw, dev, torch.float32, channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    step, resident = train_step_fn(model, x, tdtype)
    bn_note = ""
    try:
        try:
            step()  # creates the optimizer state
        except ValueError as exc:  # BatchNorm cannot train on one value per channel
            if "more than 1 value per channel" not in str(exc):
                raise
            for mod in model.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.eval()
            bn_note = " (BatchNorm layers in eval mode: this batch reaches one value per channel)"
            step()
        mp = peak_memory(step, resident(), device=dev)
    except Exception as exc:
        if not (is_oom(exc) or is_unsupported(exc)):
            raise
        kind = "out of memory" if is_oom(exc) else "unsupported"
        res.notes["train_mem"] = f"{kind} at batch size {res.batch_size}: {_first_line(exc)}"
        return
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    res.metrics["train_mem_mb"] = mp.peak_mb
    amp = "" if tdtype == torch.float32 else f", autocast {res.dtype}"
    res.notes["train_mem"] = (
        f"one step (forward, cross-entropy, backward, AdamW) of batch {res.batch_size}, fp32 "
        f"weights{amp}{bn_note}; {mp.method}"
    )


def _measure(
    res: CostResult,
    model: nn.Module,
    *,
    dev: torch.device,
    tdtype: torch.dtype,
    hw: tuple[int, int],
    in_chans: int,
    opts: dict[str, Any],
) -> None:
    m, notes = res.metrics, res.notes
    model = model.to(dev)
    if opts["memory"] and getattr(model, "fused", False):
        notes["train_mem"] = "not measured: the module is already fused for inference"
    elif opts["memory"]:
        _train_memory(res, model, dev, tdtype, hw, in_chans, opts["channels_last"])
    model, how = deployable(model)
    model = cast_for_inference(model, tdtype, dev, opts["channels_last"])
    notes["deployable"] = how + (", channels-last" if opts["channels_last"] else "")
    weights = [*model.parameters(), *model.buffers()]
    m["weights_mb"] = tensor_bytes(weights) / MIB
    notes["weights"] = f"parameters + buffers of the deployable model in {res.dtype}"
    x = make_input(res.batch_size, in_chans, hw, dev, tdtype, opts["channels_last"])
    if opts["compile"]:
        from fcasearch.models import compile_for_inference

        model = compile_for_inference(model, x)
        notes["compile"] = (
            "torch.compile (Inductor, frozen weights"
            + (", C++ wrapper" if dev.type == "cpu" else "")
            + ") for this input shape; compiled before timing"
        )

    def run() -> torch.Tensor:
        return model(x)

    with torch.inference_mode():
        run()  # first forward: dtype support, OOM, compilation show up here
        if opts["memory"]:
            mp = peak_memory(run, [*weights, x], device=dev)
            m["peak_mem_mb"] = mp.peak_mb
            notes["peak_mem"] = f"inference of batch {res.batch_size} in {res.dtype}; {mp.method}"
        if opts["cuda_graph"] and (opts["latency"] or opts["energy"]):
            run = capture_cuda_graph(run, dev)
            notes["cuda_graph"] = (
                "latency and energy of a CUDA graph replay (the forward captured once after "
                f"{CAPTURE_WARMUP} warm-up runs; no per-kernel launches); peak memory of the "
                "plain forward"
            )
        if opts["latency"]:
            stats = time_callable(run, device=dev, **opts["timing"])
            res.latency = stats
            m["latency_ms"], m["latency_p90_ms"], m["latency_cv"] = (
                stats.median_ms,
                stats.p90_ms,
                stats.cv,
            )
            m["throughput_ips"] = stats.throughput(res.batch_size)
            replayed = ", CUDA graph replay" if opts["cuda_graph"] else ""
            notes["latency"] = (
                f"one batch of {res.batch_size}, {res.dtype}, {stats.method}{replayed}; {stats.warmup} warm-up + "
                f"{stats.n} timed runs, median rel. s.e. {stats.median_rel_se:.1%} "
                f"({'stable' if stats.stable else 'cap reached'}); threads {res.fingerprint.get('threads')}"
            )
            notes["throughput"] = "batch size / median latency"
        if opts["energy"]:
            if dev.type != "cuda":
                res.energy = unavailable_energy(
                    f"device is {dev.type} (NVML measures NVIDIA GPUs only)"
                )
            else:
                res.energy = measure_energy(
                    run,
                    images_per_run=res.batch_size,
                    device_index=dev.index
                    if dev.index is not None
                    else torch.cuda.current_device(),
                    uuid=res.fingerprint.get("gpu_uuid"),
                    sync=lambda: torch.cuda.synchronize(dev),
                    min_seconds=opts["energy_seconds"],
                    nvml=opts["nvml"],
                )
            m["energy_mj_per_image"] = res.energy.energy_mj_per_image
            notes["energy"] = res.energy.method
            if res.energy.available:
                notes["energy"] += (
                    f"; average power {res.energy.avg_power_w:.1f} W over {res.energy.seconds:.2f} s"
                )


def measure_cost(
    spec_or_model: ArchSpec | nn.Module,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    dtype: str = "fp32",
    threads: int | None = None,
    latency: bool = True,
    memory: bool = True,
    energy: bool = True,
    channels_last: bool = False,
    compile: bool = False,
    cuda_graph: bool = False,
    warmup: int = 3,
    min_repeats: int = 5,
    max_repeats: int = 30,
    target_cv: float = 0.02,
    max_seconds: float = 1.0,
    energy_seconds: float = 1.0,
    img_size: int | tuple[int, int] = 224,
    in_chans: int = 3,
    fingerprint: dict[str, Any] | None = None,
    nvml: Any = None,
) -> CostResult:
    """Measure params, MACs, latency, throughput, memory and energy of one model on this machine.

    Args:
        spec_or_model: an :class:`ArchSpec` (built with ``build_model``) or any ``nn.Module``
            (never modified: a copy is measured).
        device: ``cpu`` or ``cuda[:N]``.
        batch_size: images per batch.
        dtype: ``fp32``, ``bf16`` or ``fp16`` (inference casts the weights; training autocasts).
        threads: torch CPU threads during the measurement (restored after); None keeps torch's.
        latency: time inference (and derive throughput).
        memory: measure inference and training-step peak memory.
        energy: measure energy per image (CUDA with NVML; otherwise reported unavailable).
        channels_last: use channels-last memory format for weights and inputs.
        compile: wrap the deployable model in ``torch.compile``.
        cuda_graph: time (and take energy of) a CUDA graph replay of the forward instead of
            launching its kernels one by one (:mod:`~fcasearch.measure.graphs`); CUDA only.
        warmup: untimed runs before timing.
        min_repeats: timed runs before the stability check.
        max_repeats: cap on timed runs.
        target_cv: stop when the median's relative standard error is at most this.
        max_seconds: cap on timing, s.
        energy_seconds: length of the energy window, s.
        img_size: input size for a plain module (a spec has its own).
        in_chans: input channels for a plain module (a spec has its own).
        fingerprint: a fingerprint computed earlier for this device and thread count (saves the
            NVML queries in a loop); None computes it.
        nvml: a ``pynvml``-like module object instead of the real ``pynvml`` (tests).

    Returns:
        A :class:`CostResult`. With ``latency``, ``memory`` and ``energy`` all False and a spec,
        nothing is built: closed-form params and MACs only.
    """
    started = time.perf_counter()
    dev = check_device(device)
    tdtype = parse_dtype(dtype)
    if cuda_graph:
        check_graph_device(dev)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: {batch_size!r} must be a positive integer")
    if isinstance(spec_or_model, ArchSpec):
        spec, module = spec_or_model, None
        hw, chans = spec.img_size, spec.in_chans
    elif isinstance(spec_or_model, nn.Module):
        spec, module = None, spec_or_model
        own = getattr(module, "spec", None)  # an FcaFormer knows its input size
        hw, chans = (
            (own.img_size, own.in_chans)
            if isinstance(own, ArchSpec)
            else (_pair(img_size), in_chans)
        )
    else:
        raise ValueError(
            f"spec_or_model: got {type(spec_or_model).__name__}; give an ArchSpec or a torch nn.Module"
        )
    res = CostResult(
        metrics=dict.fromkeys(METRIC_KEYS, math.nan),
        device=str(dev),
        batch_size=batch_size,
        dtype=dtype,
        arch_id=spec.arch_id if spec is not None else None,
    )
    opts = {
        "latency": latency,
        "memory": memory,
        "energy": energy,
        "channels_last": channels_last,
        "compile": compile,
        "cuda_graph": cuda_graph,
        "energy_seconds": energy_seconds,
        "nvml": nvml,
        "timing": {
            "warmup": warmup,
            "min_repeats": min_repeats,
            "max_repeats": max_repeats,
            "target_cv": target_cv,
            "max_seconds": max_seconds,
        },
    }
    with cpu_threads(threads) as used:
        res.fingerprint = (
            dict(fingerprint)
            if fingerprint is not None
            else hardware_fingerprint(dev, used, nvml=nvml)
        )
        model = copy_module(module).eval() if module is not None else None
        _count(res, spec, model, hw, chans)
        why_not = dtype_unsupported(dev, tdtype) if (latency or memory or energy) else ""
        if why_not:
            res.status, res.reason = "unsupported", why_not
        elif latency or memory or energy:
            try:
                if model is None:
                    model = build_for_spec(spec)
                    built = sum(p.numel() for p in model.parameters())
                    if built != res.metrics["params"]:
                        res.notes["params"] += f" (WARNING: the built model has {built})"
                _measure(res, model, dev=dev, tdtype=tdtype, hw=hw, in_chans=chans, opts=opts)
            except Exception as exc:
                if is_oom(exc):
                    res.status, res.reason = (
                        "oom",
                        f"out of memory at batch size {batch_size}: {_first_line(exc)}",
                    )
                elif is_unsupported(exc):
                    res.status, res.reason = (
                        "unsupported",
                        f"{dtype} on {dev.type}: {_first_line(exc)}",
                    )
                else:
                    raise
            finally:
                model = None
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
        if math.isnan(res.metrics["weights_mb"]) and spec is not None:
            res.metrics["weights_mb"] = res.metrics["params"] * tdtype.itemsize / MIB
            res.notes["weights"] = (
                f"closed-form params x {tdtype.itemsize} bytes ({dtype}); buffers excluded"
            )
    for key, what in (("latency", "latency"), ("memory", "peak_mem"), ("energy", "energy")):
        if not opts[key]:
            res.notes.setdefault(what, f"not measured ({key}=False)")
    res.seconds = time.perf_counter() - started
    return res
