"""What the CPU says of itself: fields of Linux's ``/proc/cpuinfo``, read in one place."""

from __future__ import annotations

import platform

__all__ = ["cpu_model", "cpuinfo_field"]


def cpuinfo_field(name: str) -> str:
    """The value of the first ``name : value`` line of ``/proc/cpuinfo`` (``"model name"``,
    ``"vendor_id"``, ...), or ``""`` where there is no such line or file (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name; off Linux, what ``platform`` knows, else ``"unknown"``."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"
