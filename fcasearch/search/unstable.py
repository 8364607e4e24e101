"""How the search treats a latency cell that stayed unstable: penalized, never exact.

A latency cell whose robust CV stays above the threshold after the re-measurements with backoff
(:mod:`fcasearch.measure.stability`) is recorded with ``latency_stable`` False. Its median is not
an exact value, and load on a machine only ever slows a run down, so the sampler and the
schedulers are told a pessimistic value instead: the cell's p90 as ``latency_ms`` (and the
throughput of that p90). A noisy measurement can then make a candidate look slower than it is,
never faster, and the sampler is not drawn to a lucky number. The row in ``trials.parquet`` keeps
what was measured (median, p90, robust CV, attempts, ``latency_stable`` False); the study's trial
carries ``latency_stable: False`` and ``latency_ms_told`` (the value the sampler got) as user
attributes; the report marks the cell, and the final re-measurement replaces it for the Pareto
set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["sampler_metrics"]


def sampler_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` as the sampler and the schedulers are told them (module docstring): an
    unstable latency (``latency_stable`` 0) becomes its p90; anything else is unchanged."""
    out = dict(metrics)
    if metrics.get("latency_stable") != 0.0:
        return out
    p90, median = metrics.get("latency_p90_ms", math.nan), metrics.get("latency_ms", math.nan)
    if _finite(p90) and _finite(median):
        out["latency_ms"] = max(p90, median)
        ips = metrics.get("throughput_ips", math.nan)
        if _finite(ips) and out["latency_ms"] > 0:
            out["throughput_ips"] = ips * median / out["latency_ms"]
    return out


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
