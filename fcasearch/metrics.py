"""The metric vocabulary shared by measurement, search, storage and reports.

Each name is a column of ``trials.parquet`` (``results/README.md``). No imports beyond the
standard library: every layer may use this module.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HARDWARE_METRICS", "METRICS", "Objective", "latency_label", "settings_text"]

# metric -> its natural direction as an objective, in the order tables show them
METRICS: dict[str, str] = {
    "accuracy": "maximize",
    "params": "minimize",
    "macs": "minimize",
    "latency_ms": "minimize",
    "latency_p90_ms": "minimize",
    "latency_cv": "minimize",
    "throughput_ips": "maximize",
    "peak_mem_mb": "minimize",
    "train_mem_mb": "minimize",
    "energy_mj_per_image": "minimize",
}
# metrics whose values depend on the machine that measured them (never mixed silently)
HARDWARE_METRICS: tuple[str, ...] = (
    "latency_ms",
    "latency_p90_ms",
    "latency_cv",
    "throughput_ips",
    "peak_mem_mb",
    "train_mem_mb",
    "energy_mj_per_image",
)


@dataclass(frozen=True)
class Objective:
    """One objective: a metric column and its direction (``"maximize"`` or ``"minimize"``)."""

    name: str
    direction: str

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def sign(self) -> float:
        """+1 for minimize, -1 for maximize (multiply to get a minimized value)."""
        return -1.0 if self.maximize else 1.0

    def __str__(self) -> str:
        return f"{self.name}:{self.direction[:3]}"


def settings_text(
    batch_size: int | None, dtype: str | None, threads: int | None, cuda_graph: bool = False
) -> str:
    """The settings a latency also depends on, as reports and shared studies name them:
    ``batch 1, fp32, 2 threads`` (what is known), ``, CUDA graph`` for a graph replay."""
    parts = [f"batch {batch_size}" if batch_size is not None else "", dtype or ""]
    parts.append(f"{threads} thread{'s' if threads != 1 else ''}" if threads is not None else "")
    parts.append("CUDA graph" if cuda_graph else "")
    return ", ".join(p for p in parts if p)


def latency_label(runtime: str, settings: str) -> str:
    """A runtime (with its options) at its settings: ``eager at batch 1, fp32, 2 threads``; two
    latencies compare only under one label (a report's runtime check, a shared study's drivers)."""
    return f"{runtime} at {settings}" if settings else runtime
