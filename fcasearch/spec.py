"""Architecture specs: the one typed, frozen description every FcaFormer candidate is built from.

An :class:`ArchSpec` is validated when it is constructed (a bad field raises :class:`SpecError`
naming the field, the value and what is allowed). Plain dicts, YAML and JSON become specs here, at
the boundary, and nowhere deeper.

Forward cross attention, as specified per FcaFormer stage:

* **Emitters** (TME placement): the blocks whose token-merge conv emits cross tokens. ``tme`` is
  ``"all_but_last"`` (the paper), ``"none"`` (a plain attention stage, for ablations),
  ``"every:k"`` (blocks 0, k, 2k, ... below the last) or an explicit tuple of block indices. The
  last block never emits: no later block could read its tokens.
* **Merge stride** ``s``: the merge is a depthwise conv of kernel ``2s-1``, padding ``s-1``,
  stride ``s``; each emitter gives ``ceil(Rh/s) * ceil(Rw/s)`` tokens on an ``Rh x Rw`` grid.
* **Cross window** ``W``: a block reads the cross tokens of the **last W emitting blocks** before
  it (not the last W blocks). With every block but the last emitting (the paper), block ``i``
  therefore reads ``min(i, W)`` predecessors, as in the reference. ``None`` means unlimited; any
  ``W >= number of emitters`` is the same network and canonicalizes to ``None``.

Two specs that build the same network have the same :meth:`ArchSpec.canonical` form and so the
same :attr:`ArchSpec.arch_id`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONV", "FCA", "ArchSpec", "SpecError", "StageSpec"]

CONV = "conv"
FCA = "fca"
_TME_NAMED = ("all_but_last", "none")


class SpecError(ValueError):
    """An architecture spec that cannot be built; the message names the field and the fix."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``kind`` ``"conv"`` (ConvNeXt blocks) or ``"fca"`` (FcaFormer blocks).

    Attributes:
        kind: ``"conv"`` or ``"fca"``.
        depth: number of blocks (>= 1).
        width: channels ``d`` of the stage.
        heads: attention heads (fca only; must divide ``width``); 0 for conv stages.
        mlp_ratio: MLP hidden width over ``width`` (hidden = round(width * mlp_ratio)).
        merge_stride: stride ``s`` of the token-merge conv (kernel 2s-1); paper 4.
        cross_window: how many previous *emitting* blocks a block reads; ``None`` is unlimited.
        tme: which blocks emit cross tokens: ``"all_but_last"``, ``"none"``, ``"every:k"`` or a
            tuple of block indices.
        enhancement: the local depthwise 3x3 Conv-BN after attention (the "E" of TME).
        scale_factors: learnable per-cross-token scale factors.
        cross_bias: learnable per-head, per-cross-token attention bias.
    """

    kind: str
    depth: int
    width: int
    heads: int = 0
    mlp_ratio: float = 4.0
    merge_stride: int = 4
    cross_window: int | None = 12
    tme: str | tuple[int, ...] = "all_but_last"
    enhancement: bool = True
    scale_factors: bool = True
    cross_bias: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.tme, list):
            object.__setattr__(self, "tme", tuple(self.tme))
        self._validate("stage")

    def _validate(self, where: str) -> None:
        if self.kind not in (CONV, FCA):
            raise SpecError(f"{where}.kind: {self.kind!r} is not a stage kind; use 'conv' or 'fca'")
        for name in ("depth", "width"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise SpecError(f"{where}.{name}: {value!r} must be a positive integer")
        if not isinstance(self.mlp_ratio, (int, float)) or isinstance(self.mlp_ratio, bool):
            raise SpecError(f"{where}.mlp_ratio: {self.mlp_ratio!r} must be a number")
        if round(self.width * self.mlp_ratio) < 1:
            raise SpecError(
                f"{where}.mlp_ratio: {self.mlp_ratio!r} gives an MLP of no hidden units at width "
                f"{self.width}; use a ratio > {0.5 / self.width:g}"
            )
        for name in ("enhancement", "scale_factors", "cross_bias"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"{where}.{name}: {getattr(self, name)!r} must be true or false")
        if self.kind == CONV:
            if self.heads not in (0, None):
                raise SpecError(
                    f"{where}.heads: {self.heads!r} given for a conv stage; heads apply to fca "
                    "stages only (drop it, or make the stage kind 'fca')"
                )
            return
        if not _is_int(self.heads) or self.heads < 1:
            raise SpecError(
                f"{where}.heads: {self.heads!r} must be a positive integer for an fca stage"
            )
        if self.width % self.heads:
            divisors = [h for h in range(1, self.width + 1) if self.width % h == 0]
            hint = ", ".join(str(h) for h in divisors[:12]) + (" ..." if len(divisors) > 12 else "")
            raise SpecError(
                f"{where}.heads: {self.heads} does not divide width {self.width}; "
                f"choose heads among the divisors of {self.width} ({hint})"
            )
        if not _is_int(self.merge_stride) or self.merge_stride < 1:
            raise SpecError(f"{where}.merge_stride: {self.merge_stride!r} must be an integer >= 1")
        if self.cross_window is not None and (
            not _is_int(self.cross_window) or self.cross_window < 1
        ):
            raise SpecError(
                f"{where}.cross_window: {self.cross_window!r} must be an integer >= 1 or null "
                "(unlimited); to switch cross attention off use tme: none"
            )
        self._emitters(where)

    def _emitters(self, where: str = "stage") -> tuple[int, ...]:
        last = self.depth - 1
        tme = self.tme
        if tme == "all_but_last":
            return tuple(range(last))
        if tme == "none":
            return ()
        if isinstance(tme, str) and tme.startswith("every:"):
            k = tme.split(":", 1)[1]
            if not k.isdigit() or int(k) < 1:
                raise SpecError(f"{where}.tme: {tme!r}: k in 'every:k' must be an integer >= 1")
            return tuple(range(0, last, int(k)))
        if isinstance(tme, tuple):
            if not all(_is_int(i) for i in tme):
                raise SpecError(f"{where}.tme: {tme!r} must list integer block indices")
            bad = [i for i in tme if not 0 <= i < last]
            if bad and last == 0:
                raise SpecError(
                    f"{where}.tme: {tme!r}: a stage of depth 1 has no block that can emit cross "
                    "tokens (its only block's tokens would be read by no block); use tme: none"
                )
            if bad:
                raise SpecError(
                    f"{where}.tme: block(s) {bad} cannot emit cross tokens in a stage of depth "
                    f"{self.depth}; allowed indices are 0..{last - 1} (the last block's tokens "
                    "would be read by no block)"
                )
            return tuple(sorted(set(tme)))
        raise SpecError(
            f"{where}.tme: {tme!r} is not a TME placement; use 'all_but_last', 'none', "
            "'every:k' or a list of block indices"
        )

    @property
    def emitters(self) -> tuple[int, ...]:
        """Indices of the blocks that emit cross tokens (empty for conv stages)."""
        return self._emitters() if self.kind == FCA else ()

    @property
    def hidden(self) -> int:
        """MLP hidden width."""
        return round(self.width * self.mlp_ratio)

    def sources(self, block: int) -> tuple[int, ...]:
        """Emitting blocks whose cross tokens block ``block`` reads, oldest first."""
        before = [j for j in self.emitters if j < block]
        if self.cross_window is not None:
            before = before[len(before) - min(len(before), self.cross_window) :]
        return tuple(before)

    def canonical(self) -> StageSpec:
        """The same network with every setting that cannot matter reset to its default."""
        if self.kind == CONV:
            return StageSpec(CONV, self.depth, self.width, 0, float(self.mlp_ratio))
        emit = self.emitters
        if not emit:
            return StageSpec(
                FCA, self.depth, self.width, self.heads, float(self.mlp_ratio),
                merge_stride=4, cross_window=None, tme=(), enhancement=self.enhancement,
            )  # fmt: skip
        window = self.cross_window
        if window is not None and window >= len(emit):
            window = None
        return dataclasses.replace(
            self, mlp_ratio=float(self.mlp_ratio), cross_window=window, tme=emit
        )


@dataclass(frozen=True)
class ArchSpec:
    """A whole FcaFormer-family network: stem, stages (conv stages first), head.

    Attributes:
        stages: the stages in order; all ``conv`` stages come before all ``fca`` stages (the
            hybrid split is the number of leading conv stages).
        img_size: input (height, width); an int means square. Each side must be a multiple of
            ``2 ** (len(stages) + 1)`` (32 for four stages).
        in_chans: input channels.
        num_classes: classifier outputs.
        drop_path_rate: stochastic depth, linearly increasing over all blocks to this rate.
        layer_scale_init: initial value of every layer scale (the reference's 1e-6).
    """

    stages: tuple[StageSpec, ...]
    img_size: tuple[int, int] = (224, 224)
    in_chans: int = 3
    num_classes: int = 1000
    drop_path_rate: float = 0.0
    layer_scale_init: float = 1e-6
    _key: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        img = self.img_size
        if _is_int(img):
            img = (img, img)
        elif isinstance(img, Sequence) and not isinstance(img, str):
            img = tuple(img)
        object.__setattr__(self, "img_size", img)
        object.__setattr__(self, "stages", tuple(self.stages))
        self._validate()

    def _validate(self) -> None:
        if not self.stages:
            raise SpecError("stages: at least one stage is needed")
        for i, st in enumerate(self.stages):
            if not isinstance(st, StageSpec):
                raise SpecError(
                    f"stages[{i}]: {st!r} is not a StageSpec (use ArchSpec.from_dict for dicts)"
                )
            st._validate(f"stages[{i}]")
        kinds = [st.kind for st in self.stages]
        if FCA in kinds and CONV in kinds[kinds.index(FCA) :]:
            raise SpecError(
                f"stages: kinds {kinds} put a conv stage after an fca stage; conv stages must all "
                "come first (the hybrid split)"
            )
        if self.stages[0].width % 2:
            raise SpecError(
                f"stages[0].width: {self.stages[0].width} must be even (the stem's first conv has "
                "width/2 channels)"
            )
        mult = 2 ** (len(self.stages) + 1)
        if not (len(self.img_size) == 2 and all(_is_int(s) for s in self.img_size)):
            raise SpecError(f"img_size: {self.img_size!r} must be an int or a (height, width) pair")
        for side in self.img_size:
            if side < mult or side % mult:
                raise SpecError(
                    f"img_size: {self.img_size} is not supported: with {len(self.stages)} stages each "
                    f"side must be a positive multiple of {mult} (stride 4 stem, then /2 per stage); "
                    f"e.g. {max(mult, round(side / mult) * mult)}"
                )
        for name in ("in_chans", "num_classes"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise SpecError(f"{name}: {value!r} must be a positive integer")
        if not isinstance(self.drop_path_rate, (int, float)) or not 0 <= self.drop_path_rate < 1:
            raise SpecError(f"drop_path_rate: {self.drop_path_rate!r} must be in [0, 1)")
        if not isinstance(self.layer_scale_init, (int, float)) or self.layer_scale_init <= 0:
            raise SpecError(f"layer_scale_init: {self.layer_scale_init!r} must be > 0")

    # ---- geometry -------------------------------------------------------------------------
    @property
    def num_conv_stages(self) -> int:
        """The hybrid split: how many leading stages are ConvNeXt stages."""
        return sum(st.kind == CONV for st in self.stages)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(st.depth for st in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(st.width for st in self.stages)

    def grid(self, stage: int) -> tuple[int, int]:
        """Token grid (rows, cols) of a stage: the input side / 4 / 2**stage."""
        f = 4 * 2**stage
        return self.img_size[0] // f, self.img_size[1] // f

    def tokens_per_emitter(self, stage: int) -> int:
        """Cross tokens one emitting block of ``stage`` gives: ceil(Rh/s) * ceil(Rw/s)."""
        rh, rw = self.grid(stage)
        s = self.stages[stage].merge_stride
        return math.ceil(rh / s) * math.ceil(rw / s)

    def cross_tokens(self, stage: int, block: int) -> int:
        """M: how many cross tokens block ``block`` of ``stage`` reads."""
        st = self.stages[stage]
        if st.kind != FCA:
            return 0
        return len(st.sources(block)) * self.tokens_per_emitter(stage)

    # ---- identity -------------------------------------------------------------------------
    def canonical(self) -> ArchSpec:
        """The same network with settings that cannot matter reset (see the module docstring)."""
        return ArchSpec(
            stages=tuple(st.canonical() for st in self.stages),
            img_size=self.img_size,
            in_chans=self.in_chans,
            num_classes=self.num_classes,
            drop_path_rate=float(self.drop_path_rate),
            layer_scale_init=float(self.layer_scale_init),
        )

    @property
    def arch_id(self) -> str:
        """12 hex characters: SHA-256 of the canonical form's JSON."""
        if not self._key:
            text = json.dumps(self.canonical().to_dict(), sort_keys=True, separators=(",", ":"))
            object.__setattr__(self, "_key", hashlib.sha256(text.encode()).hexdigest()[:12])
        return self._key

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-safe) that :meth:`from_dict` turns back into an equal spec."""
        stages = []
        for st in self.stages:
            d = dataclasses.asdict(st)
            d["tme"] = list(st.tme) if isinstance(st.tme, tuple) else st.tme
            stages.append(d)
        return {
            "stages": stages,
            "img_size": list(self.img_size),
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "drop_path_rate": self.drop_path_rate,
            "layer_scale_init": self.layer_scale_init,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchSpec:
        """Build a spec from a plain dict (YAML, JSON, a Ray config); unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise SpecError(f"spec: expected a mapping, got {type(data).__name__}")
        top = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - top)
        if unknown:
            raise SpecError(f"spec: unknown key(s) {unknown}; allowed: {sorted(top)}")
        if "stages" not in data:
            raise SpecError("spec.stages: missing; give a list of stages")
        stage_keys = {f.name for f in dataclasses.fields(StageSpec)}
        stages = []
        for i, raw in enumerate(data["stages"]):
            if not isinstance(raw, Mapping):
                raise SpecError(f"stages[{i}]: expected a mapping, got {raw!r}")
            bad = sorted(set(raw) - stage_keys)
            if bad:
                raise SpecError(f"stages[{i}]: unknown key(s) {bad}; allowed: {sorted(stage_keys)}")
            try:
                stages.append(StageSpec(**raw))
            except SpecError as exc:
                raise SpecError(str(exc).replace("stage.", f"stages[{i}].", 1)) from None
            except TypeError as exc:
                raise SpecError(f"stages[{i}]: {exc}") from None
        kwargs = {k: v for k, v in data.items() if k != "stages"}
        return cls(stages=tuple(stages), **kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))

    # ---- convenience ------------------------------------------------------------------------
    @classmethod
    def hybrid(
        cls,
        depths: Sequence[int],
        widths: Sequence[int],
        heads: Sequence[int],
        conv_stages: int = 2,
        img_size: int | tuple[int, int] = 224,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
        **fca: Any,
    ) -> ArchSpec:
        """Spec from per-stage lists; ``heads`` lists the fca stages only; ``fca`` keywords
        (merge_stride, cross_window, tme, mlp_ratio, switches) apply to every fca stage."""
        if not len(depths) == len(widths):
            raise SpecError(f"depths {list(depths)} and widths {list(widths)} differ in length")
        n_fca = len(depths) - conv_stages
        if len(heads) != n_fca:
            raise SpecError(f"heads: {list(heads)} must list one value per fca stage ({n_fca})")
        stages = [StageSpec(CONV, d, w) for d, w in zip(depths[:conv_stages], widths[:conv_stages])]
        stages += [
            StageSpec(FCA, d, w, h, **fca)
            for d, w, h in zip(depths[conv_stages:], widths[conv_stages:], heads)
        ]
        return cls(tuple(stages), img_size, in_chans, num_classes, drop_path_rate, layer_scale_init)

    def short(self) -> str:
        """A one-line human form, e.g. ``224 C2x64 C2x128 F6x192h6[s4,w12,all] F2x320h10[...]``."""
        img = (
            f"{self.img_size[0]}"
            if self.img_size[0] == self.img_size[1]
            else "x".join(map(str, self.img_size))
        )
        parts = [img]
        for st in self.canonical().stages:
            if st.kind == CONV:
                parts.append(f"C{st.depth}x{st.width}")
                continue
            tag = f"F{st.depth}x{st.width}h{st.heads}"
            if st.mlp_ratio != 4.0:
                tag += f"m{st.mlp_ratio:g}"
            if st.tme:
                tme = "all" if st.tme == tuple(range(st.depth - 1)) else ",".join(map(str, st.tme))
                win = "inf" if st.cross_window is None else st.cross_window
                tag += f"[s{st.merge_stride},w{win},tme={tme}]"
            else:
                tag += "[nocross]"
            off = [n for n in ("enhancement", "scale_factors", "cross_bias") if not getattr(st, n)]
            if off:
                tag += "-no_" + "-no_".join(off)
            parts.append(tag)
        return " ".join(parts)
