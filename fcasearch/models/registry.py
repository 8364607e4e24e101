"""The paper's FcaFormer models (L1-L4) and tiny test variants, as named specs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fcasearch.spec import ArchSpec, SpecError

__all__ = ["PAPER_DROP_PATH", "get_spec", "list_models"]

# name -> (depths, widths, heads of the fca stages)
_PAPER: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "fcaformer_l1": ((2, 2, 6, 2), (64, 128, 192, 320), (6, 10)),
    "fcaformer_l2": ((2, 2, 7, 2), (96, 192, 320, 480), (10, 15)),
    "fcaformer_l3": ((3, 6, 12, 3), (96, 192, 320, 512), (10, 16)),
    "fcaformer_l4": ((3, 6, 12, 3), (128, 256, 512, 768), (16, 24)),
}
# Stochastic depth the paper trained each model with (the spec's default is 0: pass it explicitly).
PAPER_DROP_PATH = {
    "fcaformer_l1": 0.0,
    "fcaformer_l2": 0.1,
    "fcaformer_l3": 0.2,
    "fcaformer_l4": 0.4,
}

# Tiny variants for tests and CPU demos (same structure, small widths).
_TINY: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "fcaformer_tiny": ((1, 1, 3, 2), (16, 24, 32, 48), (1, 2)),
    "fcaformer_nano": ((1, 1, 2, 1), (8, 16, 16, 32), (1, 1)),
}


def _builder(depths, widths, heads) -> Callable[..., ArchSpec]:
    def make(**kwargs: Any) -> ArchSpec:
        return ArchSpec.hybrid(depths, widths, heads, **kwargs)

    return make


_REGISTRY: dict[str, Callable[..., ArchSpec]] = {
    name: _builder(*cfg) for name, cfg in {**_PAPER, **_TINY}.items()
}


def list_models() -> list[str]:
    """Names accepted by :func:`get_spec`."""
    return sorted(_REGISTRY)


def get_spec(name: str, **kwargs: Any) -> ArchSpec:
    """The spec of a named model; keywords (img_size, num_classes, drop_path_rate, tme, ...)
    override the defaults of :meth:`ArchSpec.hybrid`."""
    try:
        make = _REGISTRY[name]
    except KeyError:
        raise SpecError(
            f"model {name!r} is not registered; known: {', '.join(list_models())}"
        ) from None
    return make(**kwargs)
