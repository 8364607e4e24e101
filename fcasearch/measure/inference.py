"""The measuring steps of :func:`~fcasearch.measure.cost.measure_costs` once a model is built.

1. one training step's peak memory (float32 weights, autocast for bf16/fp16, AdamW; the step
   measured is the second, so the optimizer state exists): the same for every runtime; the
   weights and buffers the two steps changed are put back afterwards;
2. the deployable form (BN calibrated and folded for FcaFormer, eval; as built for the reference
   models), cast to the dtype, optionally channels-last;
3. each runtime prepares that one model (:mod:`fcasearch.runtime`); a model a runtime cannot run
   gives that runtime's row ``status="unsupported"`` and the reason; then its inference peak
   memory;
4. latency of every prepared runtime, side by side in interleaved rounds, re-measured with
   backoff while unstable (:mod:`~fcasearch.measure.stability`). With more than one runtime each
   timed run comes right after an untimed run on the same runtime (``settle=1``): each runtime
   holds its own copy of the weights, and timed straight after the other one's run, FcaFormer-L1
   (batch 1, 2 threads, 2-core AMD EPYC) took 1.12-1.21x its time alone on ONNX Runtime, so
   onnxruntime/eager read 0.61-0.65 against 0.54-0.59 timed alone; with the untimed run first,
   0.54-0.57 (each runtime 0.96-1.01x its time alone);
5. energy per image over a separate window of back-to-back batches (NVML, CUDA only).

Steps 4 and 5 run inside ``opts["exclusive"]()`` (``measure_costs(exclusive=...)``): a search's
device lock held exclusively pauses the trials training on the device for the timed runs, not for
the preparation before them (an export, a compilation). The one part of a preparation that times
(eager's Linear probe, TensorRT's tactic timing) takes it too, on its own
(:meth:`fcasearch.runtime.Runtime.prepare`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fcasearch.measure.energy import measure_energy, unavailable_energy
from fcasearch.measure.graphs import CAPTURE_WARMUP, capture_cuda_graph
from fcasearch.measure.memory import MIB, peak_memory, tensor_bytes
from fcasearch.measure.prepare import (
    cast_for_inference,
    deployable,
    is_oom,
    is_unsupported,
    make_input,
    train_step_fn,
)
from fcasearch.measure.stability import measure_stable

if TYPE_CHECKING:
    from fcasearch.measure.cost import CostResult
    from fcasearch.runtime import Runtime

__all__ = ["TORCH_ALLOCATED_RUNTIMES", "first_line", "measure_inference"]

# runtimes whose allocations go through torch's allocator: their inference peak memory
# (peak_mem_mb) is measured; on any other runtime it is not (a note says so, the value is NaN)
TORCH_ALLOCATED_RUNTIMES = ("eager", "compile")


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _train_memory(
    results: Sequence[CostResult], model: nn.Module, dev, tdtype, hw, in_chans: int, cl: bool
) -> None:
    bs, dtype = results[0].batch_size, results[0].dtype
    x = make_input(bs, in_chans, hw, dev, torch.float32, cl)
    if cl:
        model.to(memory_format=torch.channels_last)
    # the steps change weights (AdamW) and BN statistics: kept aside (in host memory, not to
    # crowd the device) and put back, so the runtimes measure and check the model as given
    kept = [t.detach().to("cpu", copy=True) for t in (*model.parameters(), *model.buffers())]
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
        for res in results:
            res.notes["train_mem"] = f"{kind} at batch size {bs}: {first_line(exc)}"
        return
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            for t, saved in zip((*model.parameters(), *model.buffers()), kept):
                t.copy_(saved)
    amp = "" if tdtype == torch.float32 else f", autocast {dtype}"
    for res in results:
        res.metrics["train_mem_mb"] = mp.peak_mb
        res.notes["train_mem"] = (
            f"one step (forward, cross-entropy, backward, AdamW) of batch {bs}, fp32 "
            f"weights{amp}{bn_note}; {mp.method}"
        )


def _fail(res: CostResult, exc: BaseException) -> bool:
    """Record an OOM or unsupported failure on ``res`` (True), or say it is neither (False)."""
    from fcasearch.runtime import UnsupportedModel

    if isinstance(exc, UnsupportedModel):
        res.status, res.reason = "unsupported", str(exc)
    elif is_oom(exc):
        res.status = "oom"
        res.reason = f"out of memory at batch size {res.batch_size}: {first_line(exc)}"
    elif is_unsupported(exc):
        res.status, res.reason = "unsupported", f"{res.dtype} on {res.device}: {first_line(exc)}"
    else:
        return False
    return True


def _prepare_one(
    res: CostResult, runtime: Runtime, model: nn.Module, x: torch.Tensor, dev, opts: dict
) -> Callable[[], object] | None:
    """Prepare ``model`` on ``runtime``, measure its inference memory; the run to time, or None
    when the runtime cannot run it (the reason is on ``res``)."""
    try:
        prepared = runtime.prepare(model, x, exclusive=opts["exclusive"])
        res.runtime_version = prepared.version
        res.notes["runtime"] = prepared.note
        res.setup = {"total": prepared.setup_seconds, **prepared.steps}
        parts = ", ".join(f"{k} {v:.3f} s" for k, v in prepared.steps.items())
        res.notes["setup"] = f"{prepared.setup_seconds:.2f} s to prepare {runtime.name}" + (
            f" (of it {parts})" if parts else ""
        )
        run = prepared.run
        run()  # first call: dtype support and OOM show up here
        if opts["memory"] and runtime.name in TORCH_ALLOCATED_RUNTIMES:
            weights = [*model.parameters(), *model.buffers()]
            mp = peak_memory(run, [*weights, x], device=dev)
            res.metrics["peak_mem_mb"] = mp.peak_mb
            res.notes["peak_mem"] = (
                f"inference of batch {res.batch_size} in {res.dtype}; {mp.method}"
            )
        elif opts["memory"]:
            res.notes["peak_mem"] = (
                f"not measured on {runtime.name}: its allocations bypass torch's allocator"
            )
        if opts["cuda_graph"] and (opts["latency"] or opts["energy"]):
            if runtime.name not in TORCH_ALLOCATED_RUNTIMES:
                res.notes["cuda_graph"] = f"not applicable to {runtime.name}: timed as it runs"
            else:
                run = capture_cuda_graph(run, dev)
                res.notes["cuda_graph"] = (
                    "latency and energy of a CUDA graph replay (the forward captured once after "
                    f"{CAPTURE_WARMUP} warm-up runs; no per-kernel launches); peak memory of "
                    "the plain forward"
                )
    except Exception as exc:
        if not _fail(res, exc):
            raise
        return None
    return run


def _latency(ready: dict[str, tuple[CostResult, Callable[[], object]]], dev, opts) -> None:
    stats = measure_stable(
        {name: run for name, (_, run) in ready.items()},
        device=dev,
        policy=opts["stability"],
        settle=1,  # runtimes side by side (module docstring); one alone gets none
        **opts["timing"],
    )
    side = f"; interleaved with {', '.join(ready)}" if len(ready) > 1 else ""
    for name, (res, _) in ready.items():
        s = stats[name]
        res.latency = s
        m = res.metrics
        m["latency_ms"], m["latency_p90_ms"], m["latency_cv"] = s.median_ms, s.p90_ms, s.robust_cv
        m["latency_stable"] = 1.0 if s.stable else 0.0
        m["throughput_ips"] = s.throughput(res.batch_size)
        replayed = ", CUDA graph replay" if "cuda_graph" in res.notes else ""
        tries = " / ".join(f"{c:.3f}" for c in s.attempt_cvs)
        verdict = (
            "stable"
            if s.stable
            else f"UNSTABLE after {s.attempts} attempts ({s.why_unstable}), not an exact value"
        )
        res.notes["latency"] = (
            f"{res.runtime}, one batch of {res.batch_size}, {res.dtype}, {s.method}{replayed}; "
            f"{s.warmup} warm-up + {s.n} timed runs; robust CV (1.4826 MAD / median) {tries} over "
            f"{s.attempts} attempt(s), threshold {s.cv_threshold:g}: {verdict}; plain CV "
            f"{s.cv:.3f}; median rel. s.e. {s.median_rel_se:.1%}; threads {res.threads}{side}"
        )
        res.notes["throughput"] = "batch size / median latency"


def _energy(res: CostResult, run: Callable[[], object], dev, opts) -> None:
    if dev.type != "cuda":
        res.energy = unavailable_energy(f"device is {dev.type} (NVML measures NVIDIA GPUs only)")
    else:
        res.energy = measure_energy(
            run,
            images_per_run=res.batch_size,
            device_index=dev.index if dev.index is not None else torch.cuda.current_device(),
            uuid=res.fingerprint.get("gpu_uuid"),
            sync=lambda: torch.cuda.synchronize(dev),
            min_seconds=opts["energy_seconds"],
            nvml=opts["nvml"],
        )
    res.metrics["energy_mj_per_image"] = res.energy.energy_mj_per_image
    res.notes["energy"] = res.energy.method
    if res.energy.available:
        res.notes["energy"] += (
            f"; average power {res.energy.avg_power_w:.1f} W over {res.energy.seconds:.2f} s"
        )


def measure_inference(
    results: Sequence[CostResult],
    runtimes: Sequence[Runtime],
    model: nn.Module,
    *,
    dev: torch.device,
    tdtype: torch.dtype,
    hw: tuple[int, int],
    in_chans: int,
    opts: dict[str, Any],
) -> None:
    """Fill ``results[i]`` (one per ``runtimes[i]``) for ``model`` (module docstring)."""
    model = model.to(dev)
    if opts["memory"] and getattr(model, "fused", False):
        for res in results:
            res.notes["train_mem"] = "not measured: the module is already fused for inference"
    elif opts["memory"]:
        _train_memory(results, model, dev, tdtype, hw, in_chans, opts["channels_last"])
    model, how = deployable(model)
    model = cast_for_inference(model, tdtype, dev, opts["channels_last"])
    weights_mb = tensor_bytes([*model.parameters(), *model.buffers()]) / MIB
    x = make_input(results[0].batch_size, in_chans, hw, dev, tdtype, opts["channels_last"])
    ready: dict[str, tuple[CostResult, Callable[[], object]]] = {}
    for res, runtime in zip(results, runtimes):
        res.notes["deployable"] = how + (", channels-last" if opts["channels_last"] else "")
        res.metrics["weights_mb"] = weights_mb
        res.notes["weights"] = f"parameters + buffers of the deployable model in {res.dtype}"
        run = _prepare_one(res, runtime, model, x, dev, opts)
        if run is not None:
            ready[runtime.name] = (res, run)
    if not ready or not (opts["latency"] or opts["energy"]):
        return
    with opts["exclusive"]():  # the timed part: e.g. a search's device lock, held exclusively
        if opts["latency"]:
            try:
                _latency(ready, dev, opts)
            except Exception as exc:
                if not all(_fail(res, exc) for res, _ in ready.values()):
                    raise
                return
        if opts["energy"]:
            for res, run in ready.values():
                try:
                    _energy(res, run, dev, opts)
                except Exception as exc:
                    if not _fail(res, exc):
                        raise
