"""Access to NVML (the ``pynvml`` module of nvidia-ml-py), imported only when asked for.

Every function takes an optional ``nvml`` module object so tests can inject a fake one. Nothing
here keeps state: each caller opens NVML with :func:`open_nvml` and closes it with
:func:`close_nvml` (``nvmlInit``/``nvmlShutdown`` are reference counted by the driver library).
"""

from __future__ import annotations

import contextlib
import types
from typing import Any

__all__ = ["close_nvml", "device_handle", "nvml_reason", "open_nvml"]


def nvml_reason(exc: BaseException) -> str:
    """A one-line reason for an NVML failure, naming the exception class."""
    name = type(exc).__name__
    if name == "NVMLError_LibraryNotFound":
        return f"NVML not found (no NVIDIA driver): pynvml.{name}"
    if name == "NVMLError_DriverNotLoaded":
        return f"NVIDIA driver not loaded: pynvml.{name}"
    if name == "NVMLError_NoPermission":
        return f"no permission to query NVML: pynvml.{name}"
    return f"NVML error: pynvml.{name}: {exc}"


def open_nvml(nvml: Any = None) -> tuple[types.ModuleType | Any | None, str]:
    """Import (unless given) and initialise NVML.

    Args:
        nvml: a ``pynvml``-like module object; ``None`` imports the real ``pynvml``.

    Returns:
        ``(module, "")`` when NVML is initialised (call :func:`close_nvml` later), or
        ``(None, reason)`` when it cannot be used.
    """
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as exc:  # nvidia-ml-py not installed
            return None, f"pynvml not importable (install nvidia-ml-py): {exc}"
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return None, nvml_reason(exc)
    return nvml, ""


def close_nvml(nvml: Any) -> None:
    """Shut NVML down (errors on shutdown are ignored: nothing depends on them)."""
    with contextlib.suppress(nvml.NVMLError):
        nvml.nvmlShutdown()


def device_handle(nvml: Any, index: int = 0, uuid: str | None = None) -> Any:
    """NVML handle of a GPU, by UUID when known (robust to ``CUDA_VISIBLE_DEVICES``), else index."""
    if uuid:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
        except nvml.NVMLError:
            pass
    return nvml.nvmlDeviceGetHandleByIndex(index)
