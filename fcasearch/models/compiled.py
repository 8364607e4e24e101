"""The compiled inference form: the fused model through ``torch.compile`` (Inductor) with frozen
weights.

:func:`compile_for_inference` compiles an already-fused model (see
:func:`~fcasearch.models.fuse.fuse_for_inference`) for one input shape, with Inductor's
``freezing`` (weights become constants: oneDNN/MKL weight prepacking, constant folding) and, on
CPU, its C++ wrapper (the generated graph runs without the Python interpreter between kernels).
Inductor fuses LayerNorm, GELU, the residual adds and the layout copies into few loops, which the
eager form cannot do.

The cost: compilation takes tens of seconds, needs a C++ compiler on CPU, and the result serves
only inference (``torch.inference_mode`` or ``torch.no_grad``) at the shape it was compiled for.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["CompileError", "compile_for_inference", "cpp_compiler_available"]


class CompileError(RuntimeError):
    """``torch.compile`` could not build the inference form (the message says why and what to do)."""


def cpp_compiler_available() -> bool:
    """Whether a C++ compiler is on PATH (Inductor needs one to compile for CPU)."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def compile_for_inference(
    model: nn.Module, example: torch.Tensor, cpp_wrapper: bool | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Compile ``model`` for inference on inputs shaped like ``example``.

    Args:
        model: the model; folded by ``fuse_for_inference`` first if it is an unfused FcaFormer.
            Its weights are frozen into the compiled graph: later edits of the model are not seen.
        example: an input of the shape, dtype, device and memory format to serve; the compilation
            runs on it (one forward).
        cpp_wrapper: use Inductor's C++ wrapper (default: on CPU only).

    Returns:
        The compiled callable; call it under ``torch.inference_mode()`` (or ``no_grad``).

    Raises:
        CompileError: no C++ compiler on a CPU device, or Inductor failed (the cause is chained).
    """
    from fcasearch.models.fuse import fuse_for_inference

    if hasattr(model, "spec") and not getattr(model, "fused", False):
        fuse_for_inference(model)
    model.eval()
    cpu = example.device.type == "cpu"
    if cpu and not cpp_compiler_available():
        raise CompileError(
            "compile_for_inference: torch.compile on CPU needs a C++ compiler (g++ or clang++) on "
            "PATH; install one (e.g. `apt install g++`) or measure the eager inference form "
            "(fuse_for_inference) instead"
        )
    import torch._inductor.config as inductor_config

    wrapper = cpu if cpp_wrapper is None else bool(cpp_wrapper)
    compiled = torch.compile(model, dynamic=False)
    # Dynamo and Inductor read these settings whenever they compile: on the first call and on
    # any recompile (an input made under inference_mode, say, fails the guards of an ordinary
    # tensor; without freezing that recompile would be another, slower program). So every call
    # carries them (one reused patch: a few microseconds a call).
    settings = inductor_config.patch(freezing=True, cpp_wrapper=wrapper)

    def run(x: torch.Tensor) -> torch.Tensor:
        with settings:
            return compiled(x)

    try:
        with torch.inference_mode():
            run(example)
    except Exception as e:  # Inductor raises many types (BackendCompilerFailed, CppCompileError)
        raise CompileError(
            f"compile_for_inference: torch.compile failed for input {tuple(example.shape)} "
            f"{example.dtype} on {example.device} ({type(e).__name__}: {str(e)[:300]}); measure "
            "the eager inference form (fuse_for_inference) instead"
        ) from e
    return run
