"""NSGA-II offspring for an architecture space (Optuna's ``child_generation_strategy`` hook).

Optuna's NSGA-II makes a child by uniform crossover of two tournament-chosen parents and redraws
each parameter at random with probability ``1/len(params)``. On an architecture space many such
children are an architecture already evaluated (the same parameters, or parameters that differ
only where the build ignores them: an unused block's setting, say), and a search answers those
from the store without learning anything: on the micro space at 400 trials 13% of NSGA-II's
trials were repeats. :class:`ArchitectureOffspring` makes children the same way (binary tournament
on feasibility then dominance, uniform crossover, per-parameter redraw) and **draws again** while
the child is an architecture the study already holds: the duplicate elimination that evolutionary
libraries offer for discrete problems. After ``max_tries`` draws it falls back to the space's own
mutation (:meth:`~fcasearch.space.SearchSpace.mutate`), which always changes the network. Both
executors record a trial's ``arch_id`` as soon as it is sampled
(:func:`~fcasearch.search.study.sample_architecture`), so with concurrent trials (Ray) a child also
avoids the architectures still running.

Measured (micro space, naswot and MACs, 400 trials, population 25; share of the trials NSGA-II
needs to reach random search's final hypervolume, mean curves of 10 seeds per set, seeds 0-39,
one normalization over these runs and random search's):

=====================  ========  =========  =========  =========  ===============
children               0-9       10-19      20-29      30-39      all 40 seeds
=====================  ========  =========  =========  =========  ===============
Optuna's own           44%       51%        41%        52%        48%
this class             46%       45%        37%        44%        43%
=====================  ========  =========  =========  =========  ===============

So ``search.py``'s NSGA-II uses it (:func:`~fcasearch.search.study.make_sampler`). An earlier
variant that replaced the per-parameter redraw by one ``mutate`` step on half of the children
also removed the repeats but did worse (48% and 57% on seeds 0-9 and 10-19). (These figures were
measured when every trial asked every parameter; trials now ask only the parameters their
architecture uses, see below.)

Conditional parameters. A trial asks only what its architecture uses (no ``s1.tme`` when stage 1
is a conv stage). Optuna's NSGA-II hands its children only the parameters every finished trial
shares (its intersection search space) and draws the others at random;
:class:`ArchitectureNSGAII` instead gives the children every parameter of the space
(:meth:`~fcasearch.space.SearchSpace.distributions`). A parent lacking a parameter passes on the
other parent's value, else a random one; the trial then asks only the parameters its child
architecture uses, and the values of the others are dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from fcasearch.space import SearchSpace, SpaceError

__all__ = ["ArchitectureNSGAII", "ArchitectureOffspring"]


def _violation(trial: FrozenTrial) -> float:
    """Sum of positive constraint values (0: feasible)."""
    found = trial.constraints or {}  # Optuna 5: {name: value}
    values = found.values() if isinstance(found, dict) else found
    return float(sum(max(0.0, float(c)) for c in values))


class ArchitectureOffspring:
    """Child parameters for ``optuna.samplers.NSGAIISampler(child_generation_strategy=...)``.

    Args:
        space: the search space the study samples.
        seed: random seed of the selection, crossover and mutation.
        crossover_prob: probability of a crossover (else the child starts as one parent).
        swapping_prob: per parameter, probability of taking the second parent's value.
        mutation_prob: per parameter, probability of a redraw from its distribution (``None``:
            ``1 / number of parameters``, Optuna's default).
        max_tries: children drawn at most while the child is an evaluated architecture; as many
            :meth:`SearchSpace.mutate` steps after that.
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int | None = None,
        crossover_prob: float = 0.9,
        swapping_prob: float = 0.5,
        mutation_prob: float | None = None,
        max_tries: int = 20,
    ) -> None:
        for name, p in (
            ("crossover_prob", crossover_prob),
            ("swapping_prob", swapping_prob),
            ("mutation_prob", 0.0 if mutation_prob is None else mutation_prob),
        ):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}: {p!r} is not a probability in [0, 1]")
        if max_tries < 0:
            raise ValueError(f"max_tries: {max_tries!r} must be >= 0")
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.crossover_prob, self.swapping_prob = crossover_prob, swapping_prob
        self.mutation_prob, self.max_tries = mutation_prob, max_tries
        self.redraws = 0  # children that repeated an evaluated architecture (and were redrawn)
        self.fallbacks = 0  # children that needed SearchSpace.mutate after max_tries draws

    # ---- selection ------------------------------------------------------------------------------
    def _better(
        self, directions: Sequence[StudyDirection], a: FrozenTrial, b: FrozenTrial
    ) -> FrozenTrial:
        """Binary tournament: feasible beats infeasible (less violation wins between infeasible
        ones), then Pareto dominance; a tie is a coin flip."""
        va, vb = _violation(a), _violation(b)
        if va != vb:
            return a if va < vb else b
        signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in directions]
        xa = [s * v for s, v in zip(signs, a.values)]  # all minimized now
        xb = [s * v for s, v in zip(signs, b.values)]
        if xa != xb:
            if all(p <= q for p, q in zip(xa, xb)):
                return a
            if all(q <= p for p, q in zip(xa, xb)):
                return b
        return a if self.rng.random() < 0.5 else b

    def _tournament(
        self, directions: Sequence[StudyDirection], parents: list[FrozenTrial]
    ) -> FrozenTrial:
        i, j = self.rng.choice(len(parents), 2, replace=len(parents) < 2)
        return self._better(directions, parents[int(i)], parents[int(j)])

    # ---- the hook -------------------------------------------------------------------------------
    def __call__(
        self,
        study: optuna.Study,
        search_space: dict[str, BaseDistribution],
        parent_population: list[FrozenTrial],
    ) -> dict[str, Any]:
        """Parameters of one child, every parameter of ``search_space`` set."""
        seen = {t.user_attrs.get("arch_id") for t in study.get_trials(deepcopy=False)}
        for _ in range(max(1, self.max_tries)):
            params = self._child(study.directions, search_space, parent_population)
            spec = self.space.from_params(params, rng=self.rng)
            if spec.arch_id not in seen:
                return params
            self.redraws += 1
        self.fallbacks += 1
        for _ in range(self.max_tries):
            spec = self._mutate(spec)
            if spec.arch_id not in seen:
                break
        params.update(self.space.to_params(spec))
        return {k: v for k, v in params.items() if k in search_space}

    def _child(
        self,
        directions: Sequence[StudyDirection],
        search_space: dict[str, BaseDistribution],
        parents: list[FrozenTrial],
    ) -> dict[str, Any]:
        """Tournament, uniform crossover, per-parameter redraw (Optuna's NSGA-II recipe); a
        parameter the first parent lacks (conditional) comes from the second, else at random."""
        first = self._tournament(directions, parents)
        params = {k: first.params[k] for k in search_space if k in first.params}
        if self.rng.random() < self.crossover_prob:
            second = self._tournament(directions, parents)
            for name in search_space:
                if name in second.params and (
                    name not in params or self.rng.random() < self.swapping_prob
                ):
                    params[name] = second.params[name]
        p = self.mutation_prob if self.mutation_prob is not None else 1 / max(1, len(search_space))
        for name, dist in search_space.items():
            if name not in params or self.rng.random() < p:
                params[name] = self._draw(dist)
        return params

    def _draw(self, dist: BaseDistribution) -> Any:
        """A uniform draw from one Optuna distribution (log-uniform where it says log)."""
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[int(self.rng.integers(len(dist.choices)))]
        if isinstance(dist, IntDistribution):
            if dist.log:
                x = np.exp(self.rng.uniform(np.log(dist.low), np.log(dist.high)))
                return int(np.clip(np.rint(x), dist.low, dist.high))
            return int(
                dist.low + dist.step * self.rng.integers((dist.high - dist.low) // dist.step + 1)
            )
        if isinstance(dist, FloatDistribution):
            if dist.log:
                return float(np.exp(self.rng.uniform(np.log(dist.low), np.log(dist.high))))
            return float(self.rng.uniform(dist.low, dist.high))
        raise TypeError(f"no uniform draw for the distribution {dist!r}")

    def _mutate(self, spec):
        try:
            return self.space.mutate(spec, self.rng)
        except SpaceError:  # a one-member space: nothing else to propose
            return spec


class ArchitectureNSGAII(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II whose children set every parameter of an architecture space.

    Trials ask only the parameters their architecture uses, so Optuna's NSGA-II (which models
    only the parameters all finished trials share) would draw the conditional ones at random.
    This sampler's relative search space is the whole space instead
    (:meth:`~fcasearch.space.SearchSpace.distributions`); the child generation strategy
    (:class:`ArchitectureOffspring` by default) gets and returns all of them, and a trial takes
    the ones it asks.

    Args:
        space: the search space the study samples.
        **kwargs: :class:`optuna.samplers.NSGAIISampler`'s arguments; without
            ``child_generation_strategy``, ``ArchitectureOffspring(space, seed=kwargs["seed"])``.
    """

    def __init__(self, space: SearchSpace, **kwargs: Any) -> None:
        kwargs.setdefault(
            "child_generation_strategy", ArchitectureOffspring(space, seed=kwargs.get("seed"))
        )
        with warnings.catch_warnings():  # child_generation_strategy is experimental (Optuna 3.3)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(**kwargs)
        self._distributions = space.distributions()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Every parameter of the space (conditional ones included), not the intersection."""
        return dict(self._distributions)
