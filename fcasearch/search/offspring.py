"""NSGA-II offspring for an architecture space (Optuna's ``child_generation_strategy`` hook).

Optuna's NSGA-II makes a child by uniform crossover of two tournament-chosen parents and mutates
each parameter with probability ``1/len(params)``. On an architecture space that wastes trials:
many children are an architecture already evaluated (the same parameters, or parameters that
differ only where the build ignores them), and a search answers those from the store without
learning anything. On the micro space at 400 trials about 13% of NSGA-II's trials were such
repeats. :class:`ArchitectureOffspring` keeps the crossover and replaces the mutation by the
space's own (:meth:`~fcasearch.space.SearchSpace.mutate`: one choice changed so that the network
changes), applied with probability ``mutation_prob`` and always while the child is an architecture
the study already holds (up to ``max_tries`` steps away).

Measured (``bench/search_efficiency.py``, micro space, 400 trials, population 25, 10 seeds a
set): it removes the repeats, but random search's final hypervolume was reached at 48% of the
trials on seeds 0-9 and 57% on seeds 10-19, against 44% and 53% with Optuna's own children. So
``search.py`` keeps Optuna's children; this class is for spaces where a repeat is expensive
(pass it as ``NSGAIISampler(child_generation_strategy=ArchitectureOffspring(space))``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from fcasearch.space import SearchSpace, SpaceError

__all__ = ["ArchitectureOffspring"]


def _violation(trial: FrozenTrial) -> float:
    """Sum of positive constraint values (0: feasible)."""
    found = trial.constraints or {}  # Optuna 5: {name: value}
    values = found.values() if isinstance(found, dict) else found
    return float(sum(max(0.0, float(c)) for c in values))


class ArchitectureOffspring:
    """Child parameters for ``optuna.samplers.NSGAIISampler(child_generation_strategy=...)``.

    Args:
        space: the search space the study samples (trials ask every parameter: ``flat=True``).
        seed: random seed of the crossover and mutation.
        crossover_prob: probability of a crossover (else the child starts as one parent).
        swapping_prob: per parameter, probability of taking the second parent's value.
        mutation_prob: probability of one :meth:`SearchSpace.mutate` step on a child that is new.
        max_tries: mutation steps at most while the child is an evaluated architecture.
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int | None = None,
        crossover_prob: float = 0.9,
        swapping_prob: float = 0.5,
        mutation_prob: float = 0.5,
        max_tries: int = 30,
    ) -> None:
        for name, p in (
            ("crossover_prob", crossover_prob),
            ("swapping_prob", swapping_prob),
            ("mutation_prob", mutation_prob),
        ):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}: {p!r} is not a probability in [0, 1]")
        if max_tries < 0:
            raise ValueError(f"max_tries: {max_tries!r} must be >= 0")
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.crossover_prob, self.swapping_prob = crossover_prob, swapping_prob
        self.mutation_prob, self.max_tries = mutation_prob, max_tries

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
        """Parameters of one child (Optuna samples any it leaves out independently)."""
        directions = study.directions
        first = self._tournament(directions, parent_population)
        params = {k: v for k, v in first.params.items() if k in search_space}
        if self.rng.random() < self.crossover_prob:
            second = self._tournament(directions, parent_population)
            for name in params:
                if name in second.params and self.rng.random() < self.swapping_prob:
                    params[name] = second.params[name]
        spec = self.space.from_params(params, rng=self.rng)
        seen = {t.user_attrs.get("arch_id") for t in study.get_trials(deepcopy=False)}
        tries = 0
        if self.rng.random() < self.mutation_prob:
            spec, tries = self._mutate(spec), 1
        while spec.arch_id in seen and tries < self.max_tries:
            spec, tries = self._mutate(spec), tries + 1
        params.update(self.space.to_params(spec))
        return {k: v for k, v in params.items() if k in search_space}

    def _mutate(self, spec):
        try:
            return self.space.mutate(spec, self.rng)
        except SpaceError:  # a one-member space: nothing else to propose
            return spec
