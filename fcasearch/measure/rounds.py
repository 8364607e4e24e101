"""Several models timed in interleaved rounds on one runtime: the final re-measurement of a search.

Every model is prepared on the runtime first (the deployable form, cast, the runtime's own
preparation, exactly as :func:`~fcasearch.measure.cost.measure_cost` does); then each round runs
every model once, in an order that rotates from round to round
(:func:`~fcasearch.measure.latency.time_interleaved` with no early stop), so that load which
comes and goes hits all of them alike and their ranking is fair.

Each timed run comes right after an untimed run of the same model (``settle``, 1 by default). A
reference model's weights (100 MB for ConvNeXt-T) evict a small candidate's from the caches; timed
straight after it, a 1-ms ``micro`` member measured 1.53x its time alone (median over 6 repeats,
1.09-2.16x) on a 2-core AMD EPYC, and the penalty differs from model to model, so it reorders a
Pareto set of nearly equal candidates. With the untimed run first: 1.30x (0.83-1.46x). The other
three members measured 1.17-1.24x with and without it: that part of the gap does not come from
the eviction.

A model whose robust CV is above the threshold is re-measured with backoff, the others not
(:func:`~fcasearch.measure.stability.measure_stable`). A model the runtime cannot run gets
``status="unsupported"`` and its reason, never a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fcasearch.measure.latency import DEFAULT_CV_THRESHOLD, LatencyStats, cpu_threads
from fcasearch.measure.prepare import (
    build_for_spec,
    cast_for_inference,
    check_device,
    copy_module,
    deployable,
    is_oom,
    is_unsupported,
    make_input,
    parse_dtype,
)
from fcasearch.measure.stability import StabilityPolicy, measure_stable
from fcasearch.spec import ArchSpec

__all__ = ["RoundTarget", "RoundsResult", "measure_rounds"]


@dataclass(frozen=True)
class RoundTarget:
    """One model to time: an :class:`ArchSpec` (built here) or a module (copied), and, for a
    module, its input's side and channels."""

    model: ArchSpec | nn.Module
    img_size: tuple[int, int] = (224, 224)
    in_chans: int = 3


@dataclass
class RoundsResult:
    """What the rounds gave one model (times in ms)."""

    status: str = "ok"  # ok | unsupported | oom
    reason: str = ""
    latency: LatencyStats | None = None
    runtime_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers: ``latency_ms`` (median), ``latency_p90_ms``, ``latency_cv`` (robust),
        ``latency_stable``, ``attempts``, ``rounds`` (timed runs), status and reason."""
        s = self.latency
        nan = math.nan
        return {
            "status": self.status,
            "reason": self.reason,
            "runtime_version": self.runtime_version,
            "latency_ms": s.median_ms if s else nan,
            "latency_p90_ms": s.p90_ms if s else nan,
            "latency_cv": s.robust_cv if s else nan,
            "latency_stable": bool(s.stable) if s else None,
            "attempts": s.attempts if s else 0,
            "rounds": s.n if s else 0,
        }


def _prepare(target: RoundTarget, runtime, dev, tdtype, batch_size: int):
    if isinstance(target.model, ArchSpec):
        model, hw, chans = (
            build_for_spec(target.model),
            target.model.img_size,
            target.model.in_chans,
        )
    else:
        model, hw, chans = copy_module(target.model), target.img_size, target.in_chans
    model, _ = deployable(model.to(dev))
    model = cast_for_inference(model, tdtype, dev, channels_last=False)
    x = make_input(batch_size, chans, tuple(hw), dev, tdtype, channels_last=False)
    prepared = runtime.prepare(model, x)
    prepared.run()  # first call: dtype support and OOM show up here
    return prepared


def measure_rounds(
    targets: Mapping[str, RoundTarget],
    *,
    runtime: str = "eager",
    runtime_options: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    dtype: str = "fp32",
    threads: int | None = None,
    rounds: int = 10,
    warmup: int = 3,
    settle: int = 1,
    cv_threshold: float = DEFAULT_CV_THRESHOLD,
    retries: int = 2,
    backoff_s: float = 0.25,
) -> dict[str, RoundsResult]:
    """Time ``targets`` side by side in ``rounds`` interleaved rounds (module docstring).

    Args:
        targets: name -> the model to time.
        runtime: the runtime every model runs on (:func:`fcasearch.runtime.list_runtimes`).
        runtime_options: its options (:func:`fcasearch.runtime.get_runtime` keywords).
        device, batch_size, dtype, threads: as for :func:`~fcasearch.measure.measure_cost`.
        rounds: timed runs of every model (each round runs each model once).
        warmup: untimed rounds first.
        settle: untimed runs of a model right before each of its timed runs (module docstring).
        cv_threshold, retries, backoff_s: the stability policy
            (:class:`~fcasearch.measure.StabilityPolicy`); a re-measurement runs more rounds.

    Returns:
        name -> its :class:`RoundsResult`, in the order of ``targets``.

    Raises:
        RuntimeUnavailable: the runtime is not installed or does not suit the device.
        ValueError: a bad argument.
    """
    from fcasearch.runtime import UnsupportedModel, get_runtime

    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds: {rounds!r} must be a whole number >= 1")
    dev = check_device(device)
    tdtype = parse_dtype(dtype)
    rt = get_runtime(runtime, **(runtime_options or {}))
    rt.check(dev)
    policy = StabilityPolicy(cv_threshold=cv_threshold, retries=retries, backoff_s=backoff_s)
    out = {name: RoundsResult(runtime_version=rt.version) for name in targets}
    with cpu_threads(threads), torch.inference_mode(False):
        runs = {}
        for name, target in targets.items():
            try:
                prepared = _prepare(target, rt, dev, tdtype, batch_size)
            except Exception as exc:
                res = out[name]
                if isinstance(exc, UnsupportedModel):
                    res.status, res.reason = "unsupported", f"{runtime}: {exc}"
                elif is_oom(exc):
                    res.status, res.reason = "oom", f"out of memory: {_line(exc)}"
                elif is_unsupported(exc):
                    res.status, res.reason = "unsupported", f"{dtype} on {dev.type}: {_line(exc)}"
                else:
                    raise
                continue
            out[name].runtime_version = prepared.version
            runs[name] = prepared.run
        if runs:
            stats = measure_stable(
                runs,
                device=dev,
                policy=policy,
                warmup=warmup,
                min_repeats=rounds,
                max_repeats=rounds,
                target_cv=0.0,  # no early stop: every model runs every round
                max_seconds=math.inf,
                settle=settle,
            )
            for name, s in stats.items():
                out[name].latency = s
    return out


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
