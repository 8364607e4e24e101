"""``measure_cost``: the one call the search makes per candidate, and what it returns.

For an :class:`~fcasearch.spec.ArchSpec`, params and MACs come from the closed form (no model is
built unless latency, memory or energy is asked for); for any other ``nn.Module`` (the torchvision
reference models) params are counted on the module and MACs by fvcore (conv + linear + matmul +
attention, norms excluded, so both use one convention). Then, on the chosen device, dtype, batch
size and runtime(s): training-step and inference peak memory, latency and throughput, energy
(:mod:`~fcasearch.measure.inference` says how, step by step).

Latency is measured on a named runtime (:mod:`fcasearch.runtime`: ``eager`` by default,
``compile``, ``onnxruntime``, ``tensorrt``), the same way for candidates and reference models:
eval mode, the folded form where one exists. :func:`measure_costs` measures one model on several
runtimes side by side (one result each, timed in interleaved rounds).

A latency cell whose robust per-run spread stays above ``cv_threshold`` after re-measuring with
backoff (:mod:`~fcasearch.measure.stability`) is kept with ``latency_stable`` 0.0: recorded as
unstable, not as an exact value.

Out of memory ends the measurement with ``status="oom"`` (what was measured before is kept); a dtype
whose kernels are missing, or a model the runtime cannot run (export fails, outputs differ from
eager), gives ``status="unsupported"`` with the reason. A runtime that is not installed or does not
suit the device raises :class:`~fcasearch.runtime.RuntimeUnavailable` before anything is measured.
Other errors propagate.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fcasearch.measure.counting import count_macs, count_params
from fcasearch.measure.energy import EnergyResult
from fcasearch.measure.fingerprint import fingerprint_id, hardware_fingerprint
from fcasearch.measure.flops import count_flops_fvcore
from fcasearch.measure.graphs import check_graph_device
from fcasearch.measure.inference import first_line, measure_inference
from fcasearch.measure.latency import DEFAULT_CV_THRESHOLD, LatencyStats, cpu_threads
from fcasearch.measure.memory import MIB
from fcasearch.measure.prepare import (
    build_for_spec,
    check_device,
    copy_module,
    dtype_unsupported,
    is_oom,
    is_unsupported,
    parse_dtype,
)
from fcasearch.measure.stability import StabilityPolicy
from fcasearch.metrics import HARDWARE_METRICS
from fcasearch.spec import ArchSpec

__all__ = ["METRIC_KEYS", "CostResult", "measure_cost", "measure_costs"]

# the trials columns of results/README.md that measurement fills, plus weights_mb;
# latency_stable is 1.0 (stable), 0.0 (unstable after re-measuring) or NaN (not measured)
METRIC_KEYS = ("params", "macs", *HARDWARE_METRICS, "latency_stable", "weights_mb")


@dataclass
class CostResult:
    """What one measurement found, on one runtime.

    Attributes:
        metrics: exactly :data:`METRIC_KEYS`; NaN where not measured or unavailable. ``macs`` is
            per image; latency is of one batch (ms) and ``latency_cv`` its robust per-run spread;
            memory in MiB; energy in mJ per image; ``latency_stable`` 1.0 or 0.0.
        notes: how each metric was measured, or why it is missing (``energy: unavailable: ...``).
        fingerprint: the hardware fingerprint (:func:`~fcasearch.measure.hardware_fingerprint`).
        status: ``ok``, ``oom`` (out of memory at this batch size) or ``unsupported`` (dtype, or
            a model the runtime cannot run faithfully).
        reason: empty when ok; otherwise the error's first line.
        device: ``cpu`` or ``cuda[:N]``.
        batch_size: images per batch.
        dtype: ``fp32``, ``bf16`` or ``fp16``.
        runtime: the runtime latency was measured on (``eager``, ``compile``, ...).
        runtime_version: its version, e.g. ``torch 2.14.1`` or ``onnxruntime 1.32.0``.
        threads: torch CPU threads during the measurement.
        arch_id: the spec's id (None for a plain module).
        seconds: time the measurement took, s.
        setup: seconds the runtime took to prepare the model (``total``) and its main steps
            (``export``, ``session``, ``compile``, ``build``, ``probe``:
            :class:`fcasearch.runtime.Prepared`).
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
    runtime: str = "eager"
    runtime_version: str = ""
    threads: int | None = None
    arch_id: str | None = None
    seconds: float = 0.0
    setup: dict[str, float] = field(default_factory=dict)
    latency: LatencyStats | None = None
    energy: EnergyResult | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def latency_stable(self) -> bool | None:
        """True/False once latency was measured, None otherwise."""
        value = self.metrics.get("latency_stable", math.nan)
        return None if math.isnan(value) else bool(value)

    @property
    def fingerprint_id(self) -> str:
        return fingerprint_id(self.fingerprint)

    def to_row(self) -> dict[str, Any]:
        """A flat, JSON-safe row: ids, settings, runtime, every metric (``latency_stable`` as a
        bool, or None when not measured), status, notes (``key: text`` joined by `` | ``), the
        fingerprint id and the fingerprint as JSON."""
        notes = " | ".join(f"{k}: {v}" for k, v in self.notes.items())
        return {
            "arch_id": self.arch_id or "",
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "device": self.device,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "threads": self.threads,
            **self.metrics,
            "latency_stable": self.latency_stable,
            "latency_attempts": self.latency.attempts if self.latency is not None else math.nan,
            "avg_power_w": self.energy.avg_power_w if self.energy is not None else math.nan,
            "status": self.status,
            "reason": self.reason,
            "notes": notes,
            "measure_seconds": self.seconds,
            "fingerprint_id": self.fingerprint_id,
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
        }


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
        res.notes["macs"] = f"not counted: fvcore failed on a batch of 1: {first_line(exc)}"
        return
    m["macs"] = float(report.core_macs)
    res.notes["macs"] = (
        "fvcore trace, per image, conv+linear+matmul+SDPA (norms excluded; 1 MAC = 1 multiply-add); "
        f"uncounted ops: {', '.join(report.uncounted) or 'none'}"
    )


def _resolve_runtimes(
    runtimes: Sequence[str],
    options: Mapping[str, Mapping[str, Any]] | None,
    dev: torch.device,
    check: bool,
) -> list[Any]:
    from fcasearch.runtime import get_runtime, parse_runtimes

    names = parse_runtimes(list(runtimes))
    options = dict(options or {})
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"runtime_options: {unknown} name runtimes not measured ({names})")
    out = [get_runtime(name, **options.get(name, {})) for name in names]
    for rt in out if check else ():
        rt.check(dev)  # RuntimeUnavailable before anything is measured
    return out


def _target(
    spec_or_model: ArchSpec | nn.Module, img_size: int | tuple[int, int], in_chans: int
) -> tuple[ArchSpec | None, nn.Module | None, tuple[int, int], int]:
    if isinstance(spec_or_model, ArchSpec):
        return spec_or_model, None, spec_or_model.img_size, spec_or_model.in_chans
    if isinstance(spec_or_model, nn.Module):
        own = getattr(spec_or_model, "spec", None)  # an FcaFormer knows its input size
        if isinstance(own, ArchSpec):
            return None, spec_or_model, own.img_size, own.in_chans
        return None, spec_or_model, _pair(img_size), in_chans
    raise ValueError(
        f"spec_or_model: got {type(spec_or_model).__name__}; give an ArchSpec or a torch nn.Module"
    )


def measure_costs(
    spec_or_model: ArchSpec | nn.Module,
    *,
    runtimes: Sequence[str] = ("eager",),
    runtime_options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    dtype: str = "fp32",
    threads: int | None = None,
    latency: bool = True,
    memory: bool = True,
    energy: bool = True,
    channels_last: bool = False,
    cuda_graph: bool = False,
    warmup: int = 3,
    min_repeats: int = 5,
    max_repeats: int = 30,
    target_cv: float = 0.02,
    max_seconds: float = 1.0,
    cv_threshold: float = DEFAULT_CV_THRESHOLD,
    retries: int = 2,
    backoff_s: float = 0.25,
    energy_seconds: float = 1.0,
    img_size: int | tuple[int, int] = 224,
    in_chans: int = 3,
    fingerprint: dict[str, Any] | None = None,
    nvml: Any = None,
    exclusive: Callable[[], AbstractContextManager[Any]] | None = None,
) -> list[CostResult]:
    """Measure one model on each of ``runtimes``, side by side: one :class:`CostResult` each.

    Counting, training-step memory and the deployable form are shared; each runtime prepares
    that same model; latencies are timed in interleaved rounds (:func:`measure_cost` has the
    other arguments).

    Args:
        runtimes: runtime names (:func:`fcasearch.runtime.list_runtimes`), in the order of the
            results.
        runtime_options: runtime name -> options for :func:`fcasearch.runtime.get_runtime`
            (e.g. ``{"onnxruntime": {"exporter": "torchscript"}}``).

    Raises:
        RuntimeUnavailable: a runtime is not installed or does not suit the device.
        ValueError: a bad argument (the message names it).
    """
    started = time.perf_counter()
    dev = check_device(device)
    tdtype = parse_dtype(dtype)
    if cuda_graph:
        check_graph_device(dev)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: {batch_size!r} must be a positive integer")
    policy = StabilityPolicy(cv_threshold=cv_threshold, retries=retries, backoff_s=backoff_s)
    spec, module, hw, chans = _target(spec_or_model, img_size, in_chans)
    rts = _resolve_runtimes(runtimes, runtime_options, dev, check=latency or memory or energy)
    opts = {
        "latency": latency,
        "memory": memory,
        "energy": energy,
        "channels_last": channels_last,
        "cuda_graph": cuda_graph,
        "energy_seconds": energy_seconds,
        "nvml": nvml,
        "exclusive": exclusive or contextlib.nullcontext,
        "stability": policy,
        "timing": {
            "warmup": warmup,
            "min_repeats": min_repeats,
            "max_repeats": max_repeats,
            "target_cv": target_cv,
            "max_seconds": max_seconds,
        },
    }
    with cpu_threads(threads) as used:
        fp = (
            dict(fingerprint)
            if fingerprint is not None
            else hardware_fingerprint(dev, used, nvml=nvml)
        )
        results = [
            CostResult(
                metrics=dict.fromkeys(METRIC_KEYS, math.nan),
                fingerprint=dict(fp),
                device=str(dev),
                batch_size=batch_size,
                dtype=dtype,
                runtime=rt.name,
                runtime_version=rt.version,
                threads=used,
                arch_id=spec.arch_id if spec is not None else None,
            )
            for rt in rts
        ]
        model = copy_module(module).eval() if module is not None else None
        for res in results:
            _count(res, spec, model, hw, chans)
        why_not = dtype_unsupported(dev, tdtype) if (latency or memory or energy) else ""
        if why_not:
            for res in results:
                res.status, res.reason = "unsupported", why_not
        elif latency or memory or energy:
            try:
                if model is None:
                    model = build_for_spec(spec)
                    for res in results:
                        res.notes["model"] = (
                            "built from the spec, its constant-initialised parameters given "
                            "trained-like values (layer scales and norm weights U(0.5, 1.5), "
                            "biases N(0, 0.1)) so that a runtime's check against eager sees "
                            "every block"
                        )
                    built = sum(p.numel() for p in model.parameters())
                    if built != results[0].metrics["params"]:
                        for res in results:
                            res.notes["params"] += f" (WARNING: the built model has {built})"
                measure_inference(
                    results, rts, model, dev=dev, tdtype=tdtype, hw=hw, in_chans=chans, opts=opts
                )
            except Exception as exc:
                if not (is_oom(exc) or is_unsupported(exc)):
                    raise
                for res in results:
                    if is_oom(exc):
                        res.status = "oom"
                        res.reason = f"out of memory at batch size {batch_size}: {first_line(exc)}"
                    else:
                        res.status, res.reason = (
                            "unsupported",
                            f"{dtype} on {dev.type}: {first_line(exc)}",
                        )
            finally:
                model = None
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
        for res in results:
            if math.isnan(res.metrics["weights_mb"]) and spec is not None:
                res.metrics["weights_mb"] = res.metrics["params"] * tdtype.itemsize / MIB
                res.notes["weights"] = (
                    f"closed-form params x {tdtype.itemsize} bytes ({dtype}); buffers excluded"
                )
            for key, what in (("latency", "latency"), ("memory", "peak_mem"), ("energy", "energy")):
                if not opts[key]:
                    res.notes.setdefault(what, f"not measured ({key}=False)")
            res.seconds = time.perf_counter() - started
    return results


def measure_cost(
    spec_or_model: ArchSpec | nn.Module,
    *,
    runtime: str = "eager",
    runtime_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> CostResult:
    """Measure params, MACs, latency, throughput, memory and energy of one model on this machine.

    Args:
        spec_or_model: an :class:`ArchSpec` (built with ``build_model``) or any ``nn.Module``
            (never modified: a copy is measured).
        runtime: the runtime latency is measured on (:func:`fcasearch.runtime.list_runtimes`;
            ``eager`` by default); its name and version go into the result.
        runtime_options: options for :func:`fcasearch.runtime.get_runtime`.
        **kwargs: the settings of the measurement:

            * ``device`` (``cpu`` or ``cuda[:N]``), ``batch_size``, ``dtype`` (``fp32``,
              ``bf16``, ``fp16``: inference casts the weights; training autocasts), ``threads``
              (torch CPU threads during the measurement, restored after; None keeps torch's);
            * ``latency``, ``memory``, ``energy`` (what to measure; energy needs CUDA and NVML,
              otherwise reported unavailable), ``channels_last``, ``cuda_graph`` (time a CUDA
              graph replay of the forward: eager and compile on CUDA only);
            * timing: ``warmup``, ``min_repeats``, ``max_repeats``, ``target_cv`` (stop when the
              median's relative s.e. is at most this), ``max_seconds`` (cap, s);
            * stability: ``cv_threshold`` (robust per-run spread above which a cell is
              re-measured, default 0.1), ``retries`` (default 2), ``backoff_s`` (default 0.25 s);
            * ``energy_seconds``, ``img_size`` and ``in_chans`` (for a plain module; a spec has
              its own), ``fingerprint`` (computed earlier for this device and thread count),
              ``nvml`` (a ``pynvml``-like module, for tests);
            * ``exclusive``: a function returning the context to time in. It is entered around
              the timed runs of latency and energy, and around the part of a runtime's
              preparation that times kernels to choose among them (eager's Linear probe,
              TensorRT's tactic timing), each on its own; building, folding, export,
              compilation, session creation, the check against eager and memory run outside it.
              A search passes its device lock's exclusive section, so trials training on the
              device pause for the timing alone (:mod:`fcasearch.search.devicelock`).

    Returns:
        A :class:`CostResult`. With ``latency``, ``memory`` and ``energy`` all False and a spec,
        nothing is built: closed-form params and MACs only.

    Raises:
        RuntimeUnavailable: the runtime is not installed or does not suit the device.
        ValueError: a bad argument (the message names it).
    """
    if "compile" in kwargs:
        raise ValueError(
            "compile: measure_cost takes runtime='compile' instead of compile=True "
            "(see fcasearch.runtime.list_runtimes())"
        )
    options = {runtime: dict(runtime_options)} if runtime_options else None
    return measure_costs(spec_or_model, runtimes=(runtime,), runtime_options=options, **kwargs)[0]
