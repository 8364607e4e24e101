"""``compile``: the folded model through ``torch.compile`` (Inductor) with frozen weights.

:func:`compile_for_inference` compiles a folded model for one input shape with Inductor's
``freezing`` (weights become constants: weight prepacking, constant folding) and, on CPU, its C++
wrapper (the generated graph runs without the Python interpreter between kernels). Inductor fuses
LayerNorm, GELU, the residual adds and the layout copies into few loops, which eager mode cannot.

The cost: compilation takes tens of seconds, needs a C++ compiler on CPU, and the result serves
only inference (``torch.inference_mode`` or ``torch.no_grad``) at the shape it was compiled for.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from fcasearch.runtime.base import (
    Exclusive,
    Prepared,
    Runtime,
    RuntimeUnavailable,
    UnsupportedModel,
    check_outputs,
    eager_reference,
    inference_form,
)

__all__ = ["CompileError", "CompileRuntime", "compile_for_inference", "cpp_compiler_available"]


class CompileError(UnsupportedModel):
    """``torch.compile`` could not build the inference form (the message says why and what to do)."""


def _compiler() -> str:
    """The C++ compiler Inductor compiles with on CPU: ``$CXX`` where set (a command line such
    as ``ccache g++`` is fine: its first word is the program), else g++ (clang++ on macOS)."""
    chosen = os.environ.get("CXX", "").strip()
    if chosen:
        words = shlex.split(chosen)
        return words[0] if words else chosen
    return "clang++" if sys.platform == "darwin" else "g++"


def cpp_compiler_available() -> bool:
    """Whether the C++ compiler Inductor would use to compile for CPU (:func:`_compiler`) is
    there."""
    return shutil.which(_compiler()) is not None


def _no_compiler_message() -> str:
    chosen = os.environ.get("CXX")
    if chosen:
        return (
            f"torch.compile on CPU uses the C++ compiler $CXX={chosen!r}, which is not there; "
            "point CXX at an installed compiler (or unset it to use g++), or use the eager runtime"
        )
    return (
        f"torch.compile on CPU needs the C++ compiler {_compiler()} on PATH; install it "
        "(e.g. `apt install g++`), point $CXX at another one, or use the eager runtime"
    )


def compile_for_inference(
    model: nn.Module, example: torch.Tensor, cpp_wrapper: bool | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Compile ``model`` for inference on inputs shaped like ``example``.

    Args:
        model: the model; folded in place first if it is an unfolded FcaFormer. Its weights are
            frozen into the compiled graph: later edits of the model are not seen.
        example: an input of the shape, dtype, device and memory format to serve; the compilation
            runs on it (one forward).
        cpp_wrapper: use Inductor's C++ wrapper (default: on CPU only).

    Returns:
        The compiled callable; call it under ``torch.inference_mode()`` (or ``no_grad``).

    Raises:
        CompileError: no C++ compiler on a CPU device, or Inductor failed (the cause is chained).
    """
    model, _ = inference_form(model)
    cpu = example.device.type == "cpu"
    if cpu and not cpp_compiler_available():
        raise CompileError(f"compile_for_inference: {_no_compiler_message()}")
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
            f"{example.dtype} on {example.device} ({type(e).__name__}: {str(e)[:300]}); use "
            "the eager runtime instead"
        ) from e
    return run


class CompileRuntime(Runtime):
    """``torch.compile`` (Inductor, frozen weights, C++ wrapper on CPU) of the folded model.

    The compiled program is checked against eager on the example input before it is returned.
    """

    name = "compile"
    install_hint = "a C++ compiler (g++) for CPU, or triton for CUDA"

    @property
    def version(self) -> str:
        return f"torch {torch.__version__} (inductor)"

    def check(self, device: str | torch.device = "cpu") -> None:
        dev = torch.device(device)
        if dev.type == "cpu" and not cpp_compiler_available():
            raise RuntimeUnavailable(f"runtime 'compile': {_no_compiler_message()}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailable(
                f"runtime 'compile' on {dev}: this torch sees no CUDA device; use --device cpu"
            )

    def _prepare(
        self, model: nn.Module, example: torch.Tensor, note: str, exclusive: Exclusive
    ) -> Prepared:
        reference = eager_reference(model, example)
        started = time.perf_counter()
        compiled = compile_for_inference(model, example)
        seconds = time.perf_counter() - started

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return compiled(x)

        diff = check_outputs(forward(example), reference, "compile")
        wrapper = ", C++ wrapper" if example.device.type == "cpu" else ""
        return Prepared(
            runtime=self.name,
            version=self.version,
            note=(
                f"torch.compile (Inductor, frozen weights{wrapper}, static shape "
                f"{tuple(example.shape)}) of the {note}, compiled before timing; max abs diff "
                f"vs eager {diff:.2g}"
            ),
            forward=forward,
            run=lambda: forward(example),
            example=example,
            max_abs_diff=diff,
            steps={"compile": seconds},
        )
