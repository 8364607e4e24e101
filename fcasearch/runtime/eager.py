"""``eager``: PyTorch eager mode on the folded model, under ``torch.inference_mode``."""

from __future__ import annotations

import torch
from torch import nn

from fcasearch.runtime.base import Prepared, Runtime, RuntimeUnavailable

__all__ = ["EagerRuntime"]


class EagerRuntime(Runtime):
    """The model's own ``forward``, module by module, as the researcher wrote it.

    This is the default runtime and the reference every other runtime is checked against: an edit
    to a model's Python code is what gets timed.
    """

    name = "eager"
    install_hint = "torch"

    @property
    def version(self) -> str:
        return f"torch {torch.__version__}"

    def check(self, device: str | torch.device = "cpu") -> None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailable(
                f"eager on {dev}: this torch ({torch.__version__}) sees no CUDA device; install "
                "a CUDA build of torch or use --device cpu"
            )

    def _prepare(self, model: nn.Module, example: torch.Tensor, note: str) -> Prepared:
        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x)

        return Prepared(
            runtime=self.name,
            version=self.version,
            note=f"PyTorch eager, torch.inference_mode, {note}",
            forward=forward,
            run=lambda: forward(example),
            example=example,
        )
