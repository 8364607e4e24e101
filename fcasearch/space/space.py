"""The search space as an object: sample (Optuna trial or rng), contains, mutate, count.

Parameters, in the order a build asks for them (a fixed choice makes no parameter):

* ``img_size``, ``conv_stages`` (the hybrid split, asked first);
* per stage ``s{i}.depth``, ``s{i}.width``, ``s{i}.mlp_ratio``;
* only when stage ``i`` is an FcaFormer stage: ``s{i}.heads`` (or ``s{i}.head_dim``),
  ``s{i}.tme``, ``s{i}.enhancement``;
* only when it also has emitters: ``s{i}.merge_stride``, ``s{i}.cross_window``,
  ``s{i}.scale_factors``, ``s{i}.cross_bias``.

A shared key is one parameter named by the key alone (``merge_stride``), asked the first time a
stage needs it. Every name always has the same choice list, as Optuna's TPE and NSGA-II require;
explicit TME lists appear to Optuna as strings like ``"[0,2]"``. A search asks a trial only the
parameters its architecture uses (define-by-run: a conv stage has no ``s1.tme``);
:meth:`SearchSpace.distributions` lists every parameter with its Optuna distribution, for samplers
that model the conditional ones too. ``sample(trial, flat=True)`` asks every parameter, used or not.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from fcasearch.space.choices import Choice, decode, encode
from fcasearch.space.constraints import Constraints
from fcasearch.space.enumeration import CanonicalTable, emitters_of
from fcasearch.space.errors import SpaceError
from fcasearch.space.pickers import (
    ParamsPicker,
    Picker,
    RngPicker,
    make_picker,
    optuna_distribution,
)
from fcasearch.space.schema import CROSS_KEYS, SpaceDef
from fcasearch.spec import CONV, FCA, ArchSpec, SpecError, StageSpec

__all__ = ["SearchSpace"]


class _MatchPicker(Picker):
    """Answers each name with the first value ``to_params`` found compatible with a spec."""

    def __init__(self, compatible: Mapping[str, list[Any]]) -> None:
        super().__init__()
        self.compatible = compatible

    def _draw(self, name: str, choice: Choice) -> Any:
        return self.compatible[name][0]


class SearchSpace:
    """A validated FcaFormer design space (build it with :func:`fcasearch.space.load_space`).

    Attributes:
        definition: the typed definition (:class:`~fcasearch.space.schema.SpaceDef`).
        constraints: the space's global :class:`Constraints`.
        name: the space's name.
        in_chans, num_classes: fixed by the space.
    """

    def __init__(self, definition: SpaceDef) -> None:
        self.definition = definition
        self.name = definition.name
        self.constraints: Constraints = definition.constraints
        self.in_chans = definition.in_chans
        self.num_classes = definition.num_classes

    # ---- description ----------------------------------------------------------------------
    @property
    def img_sizes(self) -> tuple[int, ...]:
        """Every input side the space allows."""
        return tuple(self.definition.img_size.values)

    @property
    def img_size(self) -> int | tuple[int, ...]:
        """The input side when fixed; the tuple of choices when it is searched (specs carry it)."""
        sizes = self.img_sizes
        return sizes[0] if len(sizes) == 1 else sizes

    def to_dict(self) -> dict[str, Any]:
        """The space file's mapping as loaded (for ``run.yaml``)."""
        return copy.deepcopy(dict(self.definition.raw))

    def param_name(self, stage: int, key: str) -> str:
        """Optuna parameter name of ``key`` in ``stage``: ``s2.width``, or ``key`` when shared."""
        return key if key in self.definition.share else f"s{stage}.{key}"

    def parameters(self) -> dict[str, Choice]:
        """Every parameter that some architecture uses, with its choices (fixed ones left out)."""
        d = self.definition
        out: dict[str, Choice] = {"img_size": d.img_size, "conv_stages": d.conv_stages}
        for st in d.stages:
            for key, choice in st.choices.items():
                out.setdefault(self.param_name(st.index, key), choice)
        return {name: c for name, c in out.items() if not c.fixed}

    def distributions(self) -> dict[str, Any]:
        """Every parameter of :meth:`parameters` with the Optuna distribution a trial suggests it
        with (``IntDistribution`` or ``CategoricalDistribution``), conditional ones included: the
        search space of a sampler that proposes whole architectures
        (:class:`~fcasearch.search.offspring.ArchitectureNSGAII`)."""
        return {name: optuna_distribution(c) for name, c in self.parameters().items()}

    def describe(self) -> str:
        """Several lines: the name, the parameters and their choices, the constraints."""
        lines = [
            f"space {self.name} ({self.definition.source}): {len(self.definition.stages)} stages"
        ]
        lines += [f"  {name}: {c.describe()}" for name, c in self.parameters().items()]
        limits = {k: v for k, v in self.constraints.to_dict().items() if v is not None}
        lines.append(f"  constraints: {limits}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"SearchSpace(name={self.name!r}, parameters={len(self.parameters())})"

    # ---- building specs ----------------------------------------------------------------------
    def _build(self, picker: Picker) -> ArchSpec:
        d = self.definition
        img = picker.pick("img_size", d.img_size)
        split = picker.pick("conv_stages", d.conv_stages)
        stages = []
        for st in d.stages:

            def pick(key: str, st=st) -> Any:
                return picker.pick(self.param_name(st.index, key), st.choices[key])

            depth, width, mlp = pick("depth"), pick("width"), float(pick("mlp_ratio"))
            if st.index < split:
                stages.append(StageSpec(CONV, depth, width, 0, mlp))
                continue
            heads = pick("heads") if st.heads_key == "heads" else width // pick("head_dim")
            tme, enhancement = pick("tme"), pick("enhancement")
            cross = {k: pick(k) for k in CROSS_KEYS} if emitters_of(tme, depth) else {}
            stages.append(
                StageSpec(FCA, depth, width, heads, mlp, tme=tme, enhancement=enhancement, **cross)
            )
        return d.spec(tuple(stages), img).canonical()

    def sample(self, trial_or_rng: Any, flat: bool = False) -> ArchSpec:
        """One canonical member, chosen by an Optuna trial or a ``numpy.random.Generator``.

        With a trial, parameters are suggested as the module docstring lists (so any Optuna
        sampler, NSGA-II and TPE included, sees one consistent space); a ``FrozenTrial`` replays
        its stored parameters. With a Generator, each parameter is uniform over its choices, as
        Optuna's RandomSampler draws (see :meth:`sample_uniform` for uniform architectures).
        Constraints are not applied (see :meth:`sample_feasible`).

        Without ``flat`` (what a search does) only the parameters the architecture uses are
        asked: an FcaFormer stage's settings only when the split makes it one, cross settings only
        when the stage emits. ``flat=True`` first asks for every parameter of :meth:`parameters`,
        in that order, used or not (the build ignores the unused values), so that each trial
        carries the same parameter set.
        """
        picker = make_picker(trial_or_rng)
        if flat:
            for name, choice in self.parameters().items():
                picker.pick(name, choice)
        return self._build(picker)

    def sample_uniform(self, rng: np.random.Generator) -> ArchSpec:
        """One member drawn uniformly among the distinct canonical architectures."""
        return self._table.sample(rng)

    def sample_feasible(self, rng: np.random.Generator, max_tries: int = 10_000) -> ArchSpec:
        """Like ``sample(rng)``, redrawn until the closed-form constraints hold.

        Raises:
            SpaceError: when ``max_tries`` draws found none that meets the constraints.
        """
        for _ in range(max_tries):
            spec = self.sample(rng)
            if not self.constraints.check_closed_form(spec):
                return spec
        raise SpaceError(
            f"no architecture met the constraints in {max_tries} draws; loosen max_params / "
            "max_macs, or narrow the choices (estimate_feasible() gives the feasible fraction)",
            source=self.definition.source,
            path="constraints",
        )

    def from_params(
        self, params: Mapping[str, Any], rng: np.random.Generator | None = None
    ) -> ArchSpec:
        """The member an Optuna parameter dict (``trial.params``, :meth:`to_params`) describes.

        Args:
            params: parameter values; names the build does not ask for are ignored.
            rng: draws the parameters the build needs but ``params`` lacks (else an error).

        Raises:
            SpaceError: a needed parameter is missing (and no ``rng``) or not one of its choices.
        """
        fallback = RngPicker(rng) if rng is not None else None
        return self._build(ParamsPicker(params, fallback=fallback, source=self.definition.source))

    # ---- membership -----------------------------------------------------------------------------
    def _compatible(self, spec: ArchSpec) -> tuple[dict[str, list[Any]], str]:
        """Per parameter, the values that give ``spec``; or ({}, the reason it is no member)."""
        d = self.definition
        if not isinstance(spec, ArchSpec):
            return {}, f"expected an ArchSpec, got {type(spec).__name__}"
        c = spec.canonical()
        h, w = c.img_size
        if h != w or h not in d.img_size:
            return {}, f"img_size: {c.img_size} is not among the sides {d.img_size.describe()}"
        for key in ("in_chans", "num_classes", "drop_path_rate", "layer_scale_init"):
            if getattr(c, key) != getattr(d, key):
                return (
                    {},
                    f"{key}: {getattr(c, key)!r} differs from the space's {getattr(d, key)!r}",
                )
        if len(c.stages) != len(d.stages):
            return {}, f"stages: {len(c.stages)} stages, the space has {len(d.stages)}"
        found: dict[str, list[Any]] = {"img_size": [h]}
        needs = [("conv_stages", d.conv_stages, _equal(c.num_conv_stages), c.num_conv_stages)]
        for st, ss in zip(d.stages, c.stages):
            for key, ok, shown in _requirements(ss):
                if key in st.choices:  # heads or head_dim; a never-fca stage fails conv_stages
                    needs.append((self.param_name(st.index, key), st.choices[key], ok, shown))
        for name, choice, ok, shown in needs:
            allowed = [v for v in found.get(name, choice.values) if ok(v)]
            if not allowed:
                text = shown if isinstance(shown, str) else repr(shown)
                if name in found:
                    return {}, f"{name}: is shared, but the stages need different values ({text})"
                return {}, f"{name}: {text} is not among {choice.describe()}"
            found[name] = allowed
        return found, ""

    def to_params(self, spec: ArchSpec) -> dict[str, Any]:
        """The Optuna parameter dict that reproduces ``spec`` (for ``study.enqueue_trial``).

        Raises:
            SpaceError: ``spec`` is not a member; the message names the first setting outside.
        """
        found, why = self._compatible(spec)
        if why:
            raise SpaceError(f"not a member of this space: {why}", source=self.definition.source)
        picker = _MatchPicker(found)
        rebuilt = self._build(picker)
        if rebuilt != spec.canonical():  # an internal invariant: the matched values rebuild spec
            raise AssertionError(f"to_params rebuilt {rebuilt.short()} for {spec.short()}")
        return picker.params

    def contains(self, spec: ArchSpec) -> bool:
        """True when some choice of the parameters builds ``spec`` (compared canonically)."""
        return not self._compatible(spec)[1]

    def why_not(self, spec: ArchSpec) -> str:
        """Why ``spec`` is not a member (empty when it is)."""
        return self._compatible(spec)[1]

    def __contains__(self, spec: object) -> bool:
        return isinstance(spec, ArchSpec) and self.contains(spec)

    def mutate(self, spec: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        """A different member that changes one parameter of ``spec`` (parameters it newly needs,
        such as a stage's cross settings when it starts emitting, are drawn from ``rng``).

        Raises:
            SpaceError: ``spec`` is not a member, or no single change gives a different network.
        """
        params = self.to_params(spec)
        original = spec.canonical()
        choices = self.parameters()
        names = [n for n in params if n in choices]
        for j in rng.permutation(len(names)):
            name = names[int(j)]
            values = [v for v in choices[name].values if encode(v) != params[name]]
            for idx in rng.permutation(len(values)):
                changed = dict(params)
                changed[name] = encode(values[idx])
                candidate = self._build(ParamsPicker(changed, fallback=RngPicker(rng)))
                if candidate != original:
                    return candidate
        raise SpaceError(
            f"mutate: no single change of {original.short()} gives a different member "
            f"(the space has {self.cardinality()} architecture(s))",
            source=self.definition.source,
        )

    # ---- counting ------------------------------------------------------------------------------
    @functools.cached_property
    def _table(self) -> CanonicalTable:
        return CanonicalTable(self.definition)

    def cardinality(self) -> int:
        """Exact number of distinct canonical architectures (constraints aside)."""
        return self._table.count()

    def enumerate(self, limit: int | None = None) -> Iterator[ArchSpec]:
        """Yield distinct canonical members in a fixed order, at most ``limit`` of them."""
        for n, spec in enumerate(self._table.iterate()):
            if limit is not None and n >= limit:
                return
            yield spec

    def estimate_feasible(
        self, n: int = 2000, rng: np.random.Generator | None = None
    ) -> tuple[float, int]:
        """The fraction of architectures meeting the closed-form constraints, and their number.

        Exact (by enumeration) when the space has at most ``n`` architectures; otherwise from
        ``n`` architectures drawn uniformly (:meth:`sample_uniform`), so the count is
        ``round(fraction * cardinality)``.
        """
        total = self.cardinality()
        if not self.constraints.has_closed_form:
            return 1.0, total
        if total <= n:
            ok = sum(not self.constraints.check_closed_form(s) for s in self.enumerate())
            return ok / total, ok
        rng = rng if rng is not None else np.random.default_rng(0)
        ok = sum(not self.constraints.check_closed_form(self.sample_uniform(rng)) for _ in range(n))
        return ok / n, round(ok / n * total)


def _equal(value: Any) -> Callable[[Any], bool]:
    """A test for raw values equal to ``value`` (True is not 1 here)."""
    return lambda v: v == value and isinstance(v, bool) == isinstance(value, bool)


def _requirements(ss: StageSpec) -> list[tuple[str, Callable[[Any], bool], Any]]:
    """What canonical stage ``ss`` needs of each parameter it uses: (key, test, shown value)."""
    out = [
        (key, _equal(getattr(ss, key)), getattr(ss, key)) for key in ("depth", "width", "mlp_ratio")
    ]
    if ss.kind != FCA:
        return out
    dim = ss.width // ss.heads if ss.width % ss.heads == 0 else None
    out += [
        ("heads", _equal(ss.heads), ss.heads),
        ("head_dim", _equal(dim), f"{dim} (width {ss.width} / heads {ss.heads})"),
        (
            "tme",
            lambda t: _emits(t, ss.depth) == ss.tme,
            f"emitters {list(ss.tme)} at depth {ss.depth}",
        ),
        ("enhancement", _equal(ss.enhancement), ss.enhancement),
    ]
    if ss.tme:  # canonical: the emitters; the cross settings exist only with emitters
        n = len(ss.tme)
        out += [
            ("merge_stride", _equal(ss.merge_stride), ss.merge_stride),
            (
                "cross_window",
                lambda v: (None if v is None or v >= n else v) == ss.cross_window,
                ss.cross_window,
            ),
            ("scale_factors", _equal(ss.scale_factors), ss.scale_factors),
            ("cross_bias", _equal(ss.cross_bias), ss.cross_bias),
        ]
    return out


def _emits(tme: Any, depth: int) -> tuple[int, ...] | None:
    try:
        return emitters_of(decode(tme), depth)
    except SpecError:
        return None
