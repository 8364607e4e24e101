"""The metric vocabulary shared by measurement, search, storage and reports.

Each name is a column of ``trials.parquet`` (``results/README.md``). No imports beyond the
standard library: every layer may use this module.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HARDWARE_METRICS", "METRICS", "Objective"]

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
