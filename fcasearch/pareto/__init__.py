"""Multi-objective math for search, storage and reports: a thin layer over moocore.

Every function here takes plain arrays of shape ``(n_points, n_objectives)`` and, where it says
so, one direction per objective (``"minimize"`` or ``"maximize"``; all minimized when omitted).
The algorithms are moocore's (the EMO community's reference implementation: exact hypervolume in
any dimension, non-dominated sorting, hypervolume contributions, empirical attainment functions);
this module only checks shapes, converts directions and names things the way fcasearch does.

A run's hypervolume is measured under one :class:`HypervolumeDefinition`, fixed before the run's
first trial (``run.yaml`` key ``hypervolume``): per objective a best value and a reference value
in the objective's own units. Each objective is scaled linearly so that its best value is 0 and
its reference 1 (maximized ones flipped), and the hypervolume is taken with reference point
``(1, ..., 1)``: the fraction of the box between the ideal and the reference point that the
trials dominate. Points beyond the reference contribute nothing and nothing is rescaled over the
trials seen, so a run's hypervolume never decreases as trials are added. The rules that choose
the bounds are :func:`define_hypervolume`'s.

Example:
    >>> hypervolume([[1.0, 2.0], [2.0, 1.0]], [3.0, 3.0])
    3.0
    >>> non_dominated_sort([[1, 2], [2, 1], [2, 2]]).tolist()
    [0, 0, 1]
"""

from __future__ import annotations

from fcasearch.pareto.definition import (
    CONSTRAINT_OF,
    HypervolumeDefinition,
    HypervolumeError,
    ObjectiveBound,
    common_definition,
    define_hypervolume,
    parse_hv_reference,
)
from fcasearch.pareto.fronts import (
    DIRECTIONS,
    attainment_surfaces,
    dominates,
    hv_contributions,
    hypervolume,
    hypervolume_history,
    knee_point,
    non_dominated_sort,
    normalize_front,
    pareto_mask,
    to_minimization,
)

__all__ = [
    "CONSTRAINT_OF",
    "DIRECTIONS",
    "HypervolumeDefinition",
    "HypervolumeError",
    "ObjectiveBound",
    "attainment_surfaces",
    "common_definition",
    "define_hypervolume",
    "dominates",
    "hv_contributions",
    "hypervolume",
    "hypervolume_history",
    "knee_point",
    "non_dominated_sort",
    "normalize_front",
    "pareto_mask",
    "parse_hv_reference",
    "to_minimization",
]
