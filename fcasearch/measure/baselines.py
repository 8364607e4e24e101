"""The models the FcaFormer paper compares against, from torchvision, randomly initialised.

Weights are never downloaded (``weights=None``): cost does not depend on them.

* ``convnext_tiny``: ConvNeXt-T (28.6M params, 4.46 GMACs at 224);
* ``swin_t``: Swin-T (28.3M, 4.49 GMACs at 224);
* ``deit_s_like``: a DeiT-S-sized ViT (patch 16, 12 layers, 6 heads, width 384, MLP 1536:
  22.1M, 4.60 GMACs at 224) built from torchvision's ``VisionTransformer``, its classifier drawn
  as DeiT draws it (truncated normal, std 0.02; torchvision's zeros make every output 0).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["BASELINES", "build_baseline", "check_baseline", "list_baselines"]


def _convnext_tiny(img_size: int, num_classes: int) -> nn.Module:
    from torchvision.models import convnext_tiny

    return convnext_tiny(weights=None, num_classes=num_classes)


def _swin_t(img_size: int, num_classes: int) -> nn.Module:
    from torchvision.models import swin_t

    return swin_t(weights=None, num_classes=num_classes)


def _deit_s_like(img_size: int, num_classes: int) -> nn.Module:
    from torchvision.models import VisionTransformer

    model = VisionTransformer(
        image_size=img_size,
        patch_size=16,
        num_layers=12,
        num_heads=6,
        hidden_dim=384,
        mlp_dim=1536,
        num_classes=num_classes,
    )
    # torchvision zero-initialises the classifier, so every output would be 0 and a runtime's
    # outputs could not be checked against eager's; DeiT draws it like its other Linear layers
    nn.init.trunc_normal_(model.heads.head.weight, std=0.02)
    nn.init.zeros_(model.heads.head.bias)
    return model


# name -> (builder(img_size, num_classes), side the input must be a multiple of)
BASELINES: dict[str, tuple[Callable[[int, int], nn.Module], int]] = {
    "convnext_tiny": (_convnext_tiny, 32),
    "swin_t": (_swin_t, 32),
    "deit_s_like": (_deit_s_like, 16),
}


def list_baselines() -> list[str]:
    """Names accepted by :func:`build_baseline`."""
    return sorted(BASELINES)


def build_baseline(name: str, *, img_size: int = 224, num_classes: int = 1000) -> nn.Module:
    """A randomly initialised baseline model (never downloads weights).

    Args:
        name: one of :func:`list_baselines`.
        img_size: square input side (ViT position embeddings depend on it).
        num_classes: classifier outputs.
    """
    check_baseline(name, img_size=img_size, num_classes=num_classes)
    builder, _ = BASELINES[name]
    return builder(img_size, num_classes)


def check_baseline(name: str, *, img_size: int = 224, num_classes: int = 1000) -> None:
    """Raise ValueError (naming the field and the fix) if the baseline cannot be built so."""
    if name not in BASELINES:
        raise ValueError(
            f"baseline: {name!r} is not known; choose one of {', '.join(list_baselines())}"
        )
    _, multiple = BASELINES[name]
    if not isinstance(img_size, int) or img_size < multiple or img_size % multiple:
        raise ValueError(
            f"img_size: {img_size!r} does not suit {name}; use a positive multiple of {multiple}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: {num_classes!r} must be a positive integer")
