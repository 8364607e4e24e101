"""The FcaFormer network built from an :class:`~fcasearch.spec.ArchSpec`: ``build_model(spec)``.

Layout (``fcaformer-spec.md``, generalized per spec): a stride-4 conv stem, the conv (ConvNeXt)
stages, then the FcaFormer stages (tokens start after the last conv stage, or right after the stem
when there is none), a downsample after every stage but the last, and the head (mean over tokens,
LayerNorm, Linear). Module names follow the reference's leaf names; the prefixes differ (``stem``
for ``patch_embed.seq``, ``stages.{i}`` for ``layer_{i}``): see :mod:`fcasearch.models.checkpoint`.
"""

from __future__ import annotations

import torch
from torch import nn

from fcasearch.models.convnext import ConvStage, Downsample, Stem
from fcasearch.models.fca import FcaBlock, FcaStage, check_attention_impl
from fcasearch.models.layers import drop_path_rates, init_weights
from fcasearch.spec import CONV, ArchSpec, SpecError

__all__ = ["FcaFormer", "build_model"]


class FcaFormer(nn.Module):
    """An FcaFormer-family classifier.

    Args:
        spec: the architecture; validated already (an :class:`ArchSpec` is checked when built).

    Attributes:
        spec: the spec the model was built from.
        fused: True once :func:`~fcasearch.models.fuse.fuse_for_inference` has folded it.
    """

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        if not isinstance(spec, ArchSpec):
            raise SpecError(
                f"spec: expected an ArchSpec, got {type(spec).__name__} (use ArchSpec.from_dict)"
            )
        self.spec = spec
        self.fused = False
        stages = spec.stages
        rates = drop_path_rates(spec.drop_path_rate, sum(spec.depths))
        self.stem = Stem(spec.in_chans, stages[0].width)
        self.stages = nn.ModuleList()
        first = 0
        for s, st in enumerate(stages):
            dps = rates[first : first + st.depth]
            first += st.depth
            out_dim = stages[s + 1].width if s + 1 < len(stages) else None
            if st.kind == CONV:
                stage = ConvStage(
                    st.width, st.depth, st.hidden, dps, spec.layer_scale_init, out_dim
                )
            else:
                stage = self._fca_stage(s, dps, out_dim)
            self.stages.append(stage)
        self.norm_head = nn.LayerNorm(stages[-1].width, eps=1e-5)
        self.head = nn.Linear(stages[-1].width, spec.num_classes)
        self.apply(init_weights)

    def _fca_stage(self, s: int, dps: list[float], out_dim: int | None) -> FcaStage:
        spec, st = self.spec, self.spec.stages[s]
        emitters = set(st.emitters)
        blocks = [
            FcaBlock(
                st.width,
                st.heads,
                st.hidden,
                spec.grid(s),
                cross_in=spec.cross_tokens(s, j),
                merge_stride=st.merge_stride if j in emitters else None,
                enhancement=st.enhancement,
                scale_factors=st.scale_factors,
                cross_bias=st.cross_bias,
                drop_path=dps[j],
                layer_scale_init=spec.layer_scale_init,
            )
            for j in range(st.depth)
        ]
        sources = [st.sources(j) for j in range(st.depth)]
        down = Downsample(st.width, out_dim) if out_dim is not None else None
        return FcaStage(blocks, sources, down)

    # ---- forward ----------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        want = (self.spec.in_chans, *self.spec.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"input: shape {tuple(x.shape)} does not match the model, built for "
                f"(B, {want[0]}, {want[1]}, {want[2]}) (spec.in_chans, spec.img_size); the position "
                "bias tables are built for one input size: resize the input or build the model "
                f"with img_size={tuple(x.shape[-2:])}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: ``(B, in, H, W)`` to the last stage's ``(B, d, H/f, W/f)`` map
        (``f = 4 * 2**(stages-1)``), in channels-last memory."""
        self._check_input(x)
        x = self.stem(x)  # channels-last from here on
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over tokens, LayerNorm, Linear: ``(B, d, h, w)`` -> ``(B, classes)``."""
        return self.head(self.norm_head(x.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, classes)
        return self.forward_head(self.forward_features(x))

    def set_attention_impl(self, impl: str) -> FcaFormer:
        """Compute every block's attention with ``"sdpa"`` (default) or ``"explicit"`` (see
        :mod:`fcasearch.models.fca`)."""
        check_attention_impl(impl)
        for m in self.modules():
            if isinstance(m, FcaBlock):
                m.attn_impl = impl
        return self

    def extra_repr(self) -> str:
        return f"arch_id={self.spec.arch_id}, fused={self.fused}"


def build_model(spec: ArchSpec) -> FcaFormer:
    """Build the network of ``spec`` with the reference initialization (train mode, float32).

    Args:
        spec: the architecture (see :func:`fcasearch.models.get_spec` for the paper models).

    Returns:
        The model; ``sum(p.numel() for p in model.parameters()) == count_params(spec)``.
    """
    return FcaFormer(spec)
