"""Trial checkpoints: written atomically (temporary file, then ``os.replace``), read back safely.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: reading one never runs pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path | None) -> dict[str, Any] | None:
    """The state saved at ``path``, or ``None`` when there is no file there."""
    if path is None or not Path(path).is_file():
        return None
    return torch.load(Path(path), map_location="cpu", weights_only=True)
