"""``tensorrt``: Torch-TensorRT (``torch_tensorrt.compile``) on NVIDIA GPUs, where installed.

Optional: the package ``torch-tensorrt`` (built for the installed torch and CUDA) and a CUDA
device are needed; without them the runtime says so and nothing else changes. The compiled module
is checked against eager on the example input, like every runtime but eager.
"""

from __future__ import annotations

import importlib.util
import time

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
)

__all__ = ["TensorRTRuntime"]

_INSTALL = "pip install torch-tensorrt (the build matching your torch and CUDA)"


class TensorRTRuntime(Runtime):
    """Torch-TensorRT's dynamo path, static shape, precision of the example input."""

    name = "tensorrt"
    install_hint = _INSTALL

    @property
    def version(self) -> str:
        try:
            import torch_tensorrt
        except ImportError:
            return "torch-tensorrt (not installed)"
        return f"torch-tensorrt {torch_tensorrt.__version__}"

    def check(self, device: str | torch.device = "cpu") -> None:
        dev = torch.device(device)
        missing = importlib.util.find_spec("torch_tensorrt") is None
        if dev.type != "cuda":
            also = (
                f" (and it needs torch-tensorrt, not installed here: {_INSTALL})" if missing else ""
            )
            raise RuntimeUnavailable(
                f"runtime 'tensorrt' runs on NVIDIA GPUs only, not on {dev}{also}; use --device "
                "cuda, or the eager, compile or onnxruntime runtime on a CPU"
            )
        if missing:
            raise RuntimeUnavailable(
                f"runtime 'tensorrt' needs the package torch-tensorrt, which is not installed; "
                f"{_INSTALL}"
            )
        if not torch.cuda.is_available():
            raise RuntimeUnavailable(f"runtime 'tensorrt': this torch sees no CUDA device ({dev})")

    def _prepare(
        self, model: nn.Module, example: torch.Tensor, note: str, exclusive: Exclusive
    ) -> Prepared:
        import torch_tensorrt

        reference = eager_reference(model, example)
        try:
            with exclusive():  # the builder times tactics on the GPU to pick its kernels
                started = time.perf_counter()
                engine = torch_tensorrt.compile(
                    model,
                    ir="dynamo",
                    inputs=[example.detach().clone()],
                    enabled_precisions={example.dtype},
                )
                seconds = time.perf_counter() - started

            def forward(x: torch.Tensor) -> torch.Tensor:
                with torch.inference_mode():
                    return engine(x)

            got = forward(example)
        except Exception as exc:  # Torch-TensorRT raises many types for unsupported graphs
            text = str(exc).strip().splitlines()
            raise UnsupportedModel(
                f"tensorrt: torch_tensorrt.compile failed: {type(exc).__name__}: "
                f"{text[0][:300] if text else ''}"
            ) from exc
        diff = check_outputs(got, reference, "tensorrt")
        return Prepared(
            runtime=self.name,
            version=self.version,
            note=(
                f"Torch-TensorRT (dynamo, {example.dtype}, static shape {tuple(example.shape)}) "
                f"of the {note}; max abs diff vs eager {diff:.2g}"
            ),
            forward=forward,
            run=lambda: forward(example),
            example=example,
            max_abs_diff=diff,
            steps={"build": seconds},
        )
