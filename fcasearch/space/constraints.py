"""Global constraints of a search space: closed-form limits and limits measured on a device.

``max_params`` and ``max_macs`` are checked from the spec alone (``fcasearch.measure.counting``:
MACs = multiply-adds over convolutions, linear layers and attention matmuls, our model's count), so
a candidate that breaks them is rejected before any model is built. ``max_latency_ms`` and
``max_memory_mb`` are checked after measurement on ``device`` at ``latency_batch_size``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fcasearch.space.errors import SpaceError, did_you_mean
from fcasearch.spec import ArchSpec

__all__ = ["Constraints"]

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
# limit field -> (metric key, unit) for the measured limits
_MEASURED = {"max_latency_ms": ("latency_ms", "ms"), "max_memory_mb": ("peak_mem_mb", "MiB")}


@dataclass(frozen=True)
class Constraints:
    """Limits a candidate must meet; ``None`` means no limit.

    Attributes:
        max_params: most parameters allowed (closed form).
        max_macs: most multiply-adds per image allowed (closed form).
        max_latency_ms: most median latency of one batch, ms, measured on ``device``.
        max_memory_mb: most peak inference memory, MiB, measured on ``device``.
        device: the device the measured limits apply to: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        latency_batch_size: the batch size the latency limit is meant for.
    """

    max_params: int | None = None
    max_macs: int | None = None
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None
    device: str = "cpu"
    latency_batch_size: int = 1

    def __post_init__(self) -> None:
        for name in ("max_params", "max_macs", "max_latency_ms", "max_memory_mb"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise SpaceError(
                    f"{value!r} must be a positive number or null (no limit)",
                    path=f"constraints.{name}",
                )
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise SpaceError(
                f"{self.device!r} is not a device; use cpu, cuda, cuda:N or mps",
                path="constraints.device",
            )
        b = self.latency_batch_size
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise SpaceError(
                f"{b!r} must be an integer >= 1", path="constraints.latency_batch_size"
            )

    # ---- what needs checking ------------------------------------------------------------------
    @property
    def has_closed_form(self) -> bool:
        """True when a params or MACs limit is set."""
        return self.max_params is not None or self.max_macs is not None

    @property
    def has_measured(self) -> bool:
        """True when a latency or memory limit is set (a measurement is needed)."""
        return self.max_latency_ms is not None or self.max_memory_mb is not None

    def check_closed_form(self, spec: ArchSpec) -> list[str]:
        """Violations of the params / MACs limits (empty when ``spec`` meets them)."""
        out = []
        for name, value in self._closed_form_values(spec).items():
            limit = getattr(self, f"max_{name}")
            if value > limit:
                out.append(f"{name} {value:,} > max_{name} {int(limit):,}")
        return out

    def check_measured(self, metrics: Mapping[str, Any]) -> list[str]:
        """Violations of the latency / memory limits given measured ``metrics``.

        Args:
            metrics: measured values; keys ``latency_ms`` (ms) and ``peak_mem_mb`` (MiB). A limit
                whose metric is missing or NaN counts as violated (the message says so).
        """
        out = []
        for field_name, (key, unit) in _MEASURED.items():
            limit = getattr(self, field_name)
            if limit is None:
                continue
            value = metrics.get(key)
            where = f"on {self.device}" + (
                f", batch {self.latency_batch_size}" if key == "latency_ms" else ""
            )
            if value is None or not isinstance(value, (int, float)) or math.isnan(value):
                out.append(
                    f"{key} was not measured; {field_name} {limit:g} {unit} needs it ({where})"
                )
            elif value > limit:
                out.append(f"{key} {value:.4g} {unit} > {field_name} {limit:g} {unit} ({where})")
        return out

    def excess(
        self, spec: ArchSpec | None = None, metrics: Mapping[str, Any] | None = None
    ) -> dict[str, float]:
        """Relative excess ``value / limit - 1`` per set limit (<= 0 is feasible).

        The form Optuna's ``trial.set_constraint`` expects. Closed-form limits need ``spec``,
        measured ones ``metrics``; a limit whose value is unavailable is left out.
        """
        out: dict[str, float] = {}
        if spec is not None:
            for name, value in self._closed_form_values(spec).items():
                out[f"max_{name}"] = value / getattr(self, f"max_{name}") - 1.0
        for field_name, (key, _) in _MEASURED.items():
            limit = getattr(self, field_name)
            value = None if metrics is None else metrics.get(key)
            if limit is not None and isinstance(value, (int, float)) and not math.isnan(value):
                out[field_name] = value / limit - 1.0
        return out

    def _closed_form_values(self, spec: ArchSpec) -> dict[str, int]:
        if not self.has_closed_form:
            return {}
        from fcasearch.measure.counting import count_macs, count_params

        out = {}
        if self.max_params is not None:
            out["params"] = count_params(spec)
        if self.max_macs is not None:
            out["macs"] = count_macs(spec)
        return out

    # ---- YAML ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict with every field (``from_dict`` turns it back into an equal object)."""
        return asdict(self)

    @classmethod
    def from_dict(
        cls, data: Any, *, source: str | None = None, path: str = "constraints"
    ) -> Constraints:
        """Parse the ``constraints:`` block of a space file.

        Numbers may be written ``8_000_000``, ``8.0e+6`` or ``2e9`` (a string to PyYAML, accepted
        here); ``null`` means no limit.

        Raises:
            SpaceError: an unknown key (with a close match), a wrong type, a non-positive limit.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise SpaceError(
                f"expected a mapping of limits, got {type(data).__name__}", source=source, path=path
            )
        fields = list(cls.__dataclass_fields__)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            where = f"{path}.{key}"
            if key not in fields:
                raise SpaceError(
                    f"unknown key{did_you_mean(key, fields)}; allowed: {', '.join(fields)}",
                    source=source,
                    path=where,
                )
            if key == "device":
                kwargs[key] = value
                continue
            kwargs[key] = _number(
                value,
                integral=key in ("max_params", "max_macs", "latency_batch_size"),
                source=source,
                path=where,
            )
        try:
            return cls(**kwargs)
        except SpaceError as exc:
            raise SpaceError(str(exc), source=source) from None


def _number(value: Any, *, integral: bool, source: str | None, path: str) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.replace("_", ""))
        except ValueError:
            raise SpaceError(f"{value!r} is not a number", source=source, path=path) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"{value!r} is not a number", source=source, path=path)
    if integral:
        if value != int(value):
            raise SpaceError(f"{value!r} must be a whole number", source=source, path=path)
        return int(value)
    return value
