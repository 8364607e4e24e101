"""Distinct canonical architectures of a space: exact count, enumeration, uniform sampling.

Settings that build the same network are one architecture (``ArchSpec.canonical``): a cross
window >= the number of emitters is unlimited, a stage that emits nothing has no cross settings,
``every:k`` and ``all_but_last`` may name the same emitters. Counting therefore works on canonical
*elements*, never on raw parameter combinations.

Each stage factors into two independent parts: the *core* (width, heads, MLP ratio) and the *body*
(depth, emitters, enhancement and the cross settings). Shared keys couple stages: let an
*assignment* be one joint value of all shared keys. A part element is reachable under a set of
assignments, kept as a bitmask; an architecture (one element per part per stage) exists iff the
AND of its masks is non-zero. Counting groups elements by mask, so it multiplies group sizes and
never lists architectures.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fcasearch.space.choices import Choice
from fcasearch.space.schema import SpaceDef, StageChoices
from fcasearch.spec import CONV, FCA, ArchSpec, StageSpec

__all__ = ["CanonicalTable", "emitters_of"]


def emitters_of(tme: str | tuple[int, ...], depth: int) -> tuple[int, ...]:
    """The emitting blocks of a TME placement at ``depth`` (as ``StageSpec.emitters``)."""
    return StageSpec(FCA, depth, 1, 1, tme=tme).emitters


@dataclass(frozen=True)
class _Pair:
    """Core elements x body elements of one stage, all reachable under ``mask``."""

    mask: int
    cores: tuple[tuple, ...]
    bodies: tuple[tuple, ...]

    @property
    def size(self) -> int:
        return len(self.cores) * len(self.bodies)


class CanonicalTable:
    """Canonical part elements of every stage, per hybrid split, with their assignment masks."""

    def __init__(self, d: SpaceDef) -> None:
        self.d = d
        self.shared = list(d.share)
        sizes = [len(d.share[k]) for k in self.shared]
        n_assign = int(np.prod(sizes)) if sizes else 1
        self.full = (1 << n_assign) - 1
        # masks[key][value index]: the assignments that give shared `key` that value
        self.masks: dict[str, list[int]] = {k: [0] * len(d.share[k]) for k in self.shared}
        for a, combo in enumerate(itertools.product(*(range(s) for s in sizes))):
            for key, v in zip(self.shared, combo):
                self.masks[key][v] |= 1 << a
        self._emit: dict[tuple[Any, int], tuple[int, ...]] = {}
        # per split k: per stage, the reachable (core x body) pairs
        self.pairs: dict[int, list[list[_Pair]]] = {
            k: [self._stage_pairs(st, CONV if st.index < k else FCA) for st in d.stages]
            for k in d.conv_stages.values
        }
        self._completions: dict[tuple[int, int, int], int] = {}

    # ---- parts ----------------------------------------------------------------------------
    def _emitters(self, tme: Any, depth: int) -> tuple[int, ...]:
        key = (tme, depth)
        if key not in self._emit:
            self._emit[key] = emitters_of(tme, depth)
        return self._emit[key]

    def _groups(self, choices: dict[str, Choice], element) -> dict[int, tuple[tuple, ...]]:
        """Run every raw combination of ``choices`` through ``element``; group by mask."""
        keys = list(choices)
        reach: dict[tuple, int] = {}
        for combo in itertools.product(*(range(len(choices[k])) for k in keys)):
            mask = self.full
            values = {}
            for key, idx in zip(keys, combo):
                values[key] = choices[key].values[idx]
                if key in self.masks:
                    mask &= self.masks[key][idx]
            el = element(values)
            reach[el] = reach.get(el, 0) | mask
        groups: dict[int, list[tuple]] = {}
        for el, mask in reach.items():
            groups.setdefault(mask, []).append(el)
        return {m: tuple(els) for m, els in groups.items()}

    def _stage_pairs(self, st: StageChoices, kind: str) -> list[_Pair]:
        ch = dict(st.choices)
        if kind == CONV:
            core = self._groups(
                {k: ch[k] for k in ("width", "mlp_ratio")},
                lambda v: (v["width"], 0, float(v["mlp_ratio"])),
            )
            body = self._groups({"depth": ch["depth"]}, lambda v: (v["depth"],))
        else:
            hk = st.heads_key

            def core_el(v: dict[str, Any]) -> tuple:
                heads = v["heads"] if hk == "heads" else v["width"] // v["head_dim"]
                return (v["width"], heads, float(v["mlp_ratio"]))

            def body_el(v: dict[str, Any]) -> tuple:
                emit = self._emitters(v["tme"], v["depth"])
                if not emit:
                    return (v["depth"], (), v["enhancement"], 4, None, True, True)
                window = v["cross_window"]
                if window is not None and window >= len(emit):
                    window = None
                return (
                    v["depth"],
                    emit,
                    v["enhancement"],
                    v["merge_stride"],
                    window,
                    v["scale_factors"],
                    v["cross_bias"],
                )

            core = self._groups({k: ch[k] for k in ("width", hk, "mlp_ratio")}, core_el)
            body_keys = (
                "depth",
                "tme",
                "enhancement",
                "merge_stride",
                "cross_window",
                "scale_factors",
                "cross_bias",
            )
            body = self._groups({k: ch[k] for k in body_keys}, body_el)
        pairs = []
        for cm, cores in core.items():
            for bm, bodies in body.items():
                if cm & bm:
                    pairs.append(_Pair(cm & bm, cores, bodies))
        return pairs

    # ---- counting -------------------------------------------------------------------------
    def completions(self, k: int, i: int, mask: int) -> int:
        """Distinct ways to fill stages ``i..`` of split ``k`` given the assignments ``mask``."""
        stages = self.pairs[k]
        if i == len(stages):
            return 1 if mask else 0
        key = (k, i, mask)
        if key not in self._completions:
            total = 0
            for p in stages[i]:
                m = mask & p.mask
                if m:
                    total += p.size * self.completions(k, i + 1, m)
            self._completions[key] = total
        return self._completions[key]

    def count(self) -> int:
        """Distinct canonical architectures (constraints aside)."""
        per_img = sum(self.completions(k, 0, self.full) for k in self.pairs)
        return len(self.d.img_size) * per_img

    # ---- listing and uniform sampling ------------------------------------------------------
    def _spec(self, img: int, k: int, picks: Sequence[tuple[tuple, tuple]]) -> ArchSpec:
        stages = []
        for i, (core, body) in enumerate(picks):
            width, heads, mlp = core
            if i < k:
                stages.append(StageSpec(CONV, body[0], width, 0, mlp))
                continue
            depth, emit, enh, stride, window, scale, bias = body
            stages.append(
                StageSpec(FCA, depth, width, heads, mlp, stride, window, emit, enh, scale, bias)
            )
        return self.d.spec(tuple(stages), img)

    def iterate(self) -> Iterator[ArchSpec]:
        """Every distinct canonical architecture once, in a fixed order."""
        for img in self.d.img_size.values:
            for k, stages in self.pairs.items():
                yield from self._walk(img, k, stages, 0, self.full, [])

    def _walk(self, img: int, k: int, stages, i: int, mask: int, picks: list) -> Iterator[ArchSpec]:
        if i == len(stages):
            yield self._spec(img, k, picks)
            return
        for p in stages[i]:
            m = mask & p.mask
            if not m:
                continue
            for core in p.cores:
                for body in p.bodies:
                    picks.append((core, body))
                    yield from self._walk(img, k, stages, i + 1, m, picks)
                    picks.pop()

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        """One architecture drawn uniformly among the distinct canonical ones."""
        splits = list(self.pairs)
        weights = [self.completions(k, 0, self.full) for k in splits]
        k = splits[_weighted(rng, weights)]
        img = self.d.img_size.values[int(rng.integers(len(self.d.img_size)))]
        mask, picks = self.full, []
        for i, pairs in enumerate(self.pairs[k]):
            w = [
                p.size * self.completions(k, i + 1, mask & p.mask) if mask & p.mask else 0
                for p in pairs
            ]
            p = pairs[_weighted(rng, w)]
            mask &= p.mask
            picks.append(
                (
                    p.cores[int(rng.integers(len(p.cores)))],
                    p.bodies[int(rng.integers(len(p.bodies)))],
                )
            )
        return self._spec(img, k, picks)


def _weighted(rng: np.random.Generator, weights: Sequence[int]) -> int:
    """An index drawn with probability proportional to integer ``weights`` (Python ints)."""
    total = sum(weights)
    if total < 1 << 62:
        r = int(rng.integers(total))
    else:  # counts beyond int64: scale a 62-bit draw (bias below 2**-62 per unit weight)
        r = int(rng.integers(1 << 62)) * total >> 62
    for i, w in enumerate(weights):
        if r < w:
            return i
        r -= w
    raise AssertionError("weights sum to zero")
