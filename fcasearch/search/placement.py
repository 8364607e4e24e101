"""Where a trial ran: the columns that say so (``threads``, ``ray_node``,
``cuda_visible_devices``), filled in by the process that ran it."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["placement_columns"]


def placement_columns(
    fingerprint: dict[str, Any] | None = None, ray_node: str = ""
) -> dict[str, Any]:
    """The trial's placement, read in the process that ran it.

    Args:
        fingerprint: the trial's hardware fingerprint; its ``threads`` (those the measurement
            used) win over torch's current count.
        ray_node: the Ray node id the trial ran on (``""`` for the local executor).

    Returns:
        ``threads`` (CPU threads of the measurement, else of training), ``ray_node`` and
        ``cuda_visible_devices`` (``""`` when unset).
    """
    threads = (fingerprint or {}).get("threads")
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return {
        "threads": int(threads),
        "ray_node": ray_node,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
