"""Deployment runtimes: how a model is run for timing and deployment.

A runtime prepares a model and an example input and returns a :class:`Prepared` (a callable, a
note on what ran and how, and the runtime's version). The registry:

* ``eager``: PyTorch eager mode, ``torch.inference_mode``, the folded form (the default, and the
  reference every other runtime is checked against; large float32 Linear layers run as 1x1
  convolutions on a multi-threaded CPU, see :mod:`fcasearch.runtime.eager`);
* ``compile``: ``torch.compile`` / Inductor with frozen weights;
* ``onnxruntime``: ``torch.onnx`` export run in an ONNX Runtime session;
* ``tensorrt``: Torch-TensorRT, where it is installed (NVIDIA GPUs).

Use::

    rt = get_runtime("onnxruntime")
    prepared = rt.prepare(model, torch.randn(1, 3, 224, 224))
    logits = prepared(images)

Runtimes load on first use: importing this package imports neither onnxruntime nor
torch-tensorrt.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from fcasearch.runtime.base import (
    Prepared,
    Runtime,
    RuntimeUnavailable,
    UnsupportedModel,
    inference_form,
)

__all__ = [
    "RUNTIMES",
    "CompileError",
    "Prepared",
    "Runtime",
    "RuntimeUnavailable",
    "UnsupportedModel",
    "compile_for_inference",
    "export_onnx",
    "format_runtime_options",
    "get_runtime",
    "inference_form",
    "list_runtimes",
    "parse_runtime_options",
    "parse_runtimes",
    "runtime_label",
    "verify_onnx",
]

# name -> (module under fcasearch.runtime, class)
RUNTIMES: dict[str, tuple[str, str]] = {
    "eager": ("eager", "EagerRuntime"),
    "compile": ("compiled", "CompileRuntime"),
    "onnxruntime": ("onnx", "OnnxRuntime"),
    "tensorrt": ("tensorrt", "TensorRTRuntime"),
}

# names defined in submodules, loaded on first use
_LAZY = {
    "CompileError": "compiled",
    "compile_for_inference": "compiled",
    "export_onnx": "onnx",
    "verify_onnx": "onnx",
}


def list_runtimes() -> list[str]:
    """Names accepted by :func:`get_runtime`, the default (``eager``) first."""
    return list(RUNTIMES)


def get_runtime(name: str, **options: Any) -> Runtime:
    """The runtime called ``name``, constructed with ``options`` (e.g. ``exporter=`` or
    ``providers=`` for ``onnxruntime``).

    Whether it can run here is checked by ``runtime.check(device)`` (and again by ``prepare``).

    Raises:
        ValueError: an unknown name (the message lists the known ones) or a bad option.
    """
    if name not in RUNTIMES:
        raise ValueError(f"runtime: {name!r} is not known; choose one of {', '.join(RUNTIMES)}")
    module, cls = RUNTIMES[name]
    runtime_cls = getattr(importlib.import_module(f"fcasearch.runtime.{module}"), cls)
    takes = list(runtime_cls.option_defaults())
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ValueError(
            f"runtime {name!r} has no option(s) {unknown}; it takes "
            f"{', '.join(takes) if takes else 'none'}"
        )
    return runtime_cls(**options)


def parse_runtimes(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"eager,onnxruntime"`` (or a list) to known runtime names, in order, without repeats.

    Raises:
        ValueError: an empty list or an unknown name.
    """
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not names:
        raise ValueError(f"runtime: {text!r} names no runtime; choose from {', '.join(RUNTIMES)}")
    for name in names:
        if name not in RUNTIMES:
            raise ValueError(f"runtime: {name!r} is not known; choose from {', '.join(RUNTIMES)}")
    return names


def _option_value(text: str) -> Any:
    """``true``/``false`` -> bool, digits -> int, ``a,b`` -> list of str, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lstrip("-").isdigit():
        return int(text)
    if "," in text:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def parse_runtime_options(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``["eager.pointwise_conv=false", "onnxruntime.exporter=dynamo"]`` to runtime name ->
    options for :func:`get_runtime` (values: ``true``/``false``, integers, comma lists, strings).

    Whether a runtime takes an option is checked when it is constructed.

    Raises:
        ValueError: an item not shaped ``RUNTIME.KEY=VALUE``, an unknown runtime, or a key given
            twice.
    """
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        name, dot, key = target.strip().partition(".")
        if not (sep and dot and name and key.strip()):
            raise ValueError(
                f"runtime option {item!r}: give RUNTIME.KEY=VALUE, e.g. eager.pointwise_conv=false "
                "or onnxruntime.providers=TensorrtExecutionProvider,CUDAExecutionProvider"
            )
        if name not in RUNTIMES:
            raise ValueError(
                f"runtime option {item!r}: runtime {name!r} is not known; choose from "
                f"{', '.join(RUNTIMES)}"
            )
        key = key.strip()
        if key in options.get(name, {}):
            raise ValueError(f"runtime option {item!r}: {name}.{key} is given twice")
        options.setdefault(name, {})[key] = _option_value(value.strip())
    return options


def format_runtime_options(options: Mapping[str, Any]) -> str:
    """A runtime's options as rows and run files record them: ``key=value`` pairs in key order,
    ``; ``-separated, lists comma-joined; ``""`` for the runtime's defaults."""
    parts = []
    for key, value in sorted(options.items()):
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        parts.append(f"{key}={text}")
    return "; ".join(parts)


def runtime_label(name: str, options: Mapping[str, Any]) -> str:
    """A runtime with its options, as a run and a shared study tell runtimes apart: ``eager``,
    ``eager (pointwise_conv=False)`` (the text the reports build from ``run.yaml`` alike)."""
    text = format_runtime_options(options)
    return f"{name} ({text})" if text else name


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fcasearch.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fcasearch.runtime.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
