"""Pareto reports of searches: analysis (fronts, hypervolumes, tables) and rendering.

Importing this package is light: seaborn and matplotlib load only when figures are drawn
(:mod:`fcasearch.report.plot`, imported inside :func:`build_report`). The multi-objective math
lives in :mod:`fcasearch.pareto` (over moocore); its names are re-exported here.

Example:
    >>> from fcasearch.report import hypervolume, non_dominated_sort
    >>> hypervolume([[1.0, 2.0], [2.0, 1.0]], [3.0, 3.0])
    3.0
    >>> non_dominated_sort([[1, 2], [2, 1], [2, 2]]).tolist()
    [0, 0, 1]
"""

from __future__ import annotations

from fcasearch.pareto import (
    HypervolumeDefinition,
    attainment_surfaces,
    dominates,
    hv_contributions,
    hypervolume,
    knee_point,
    non_dominated_sort,
    pareto_mask,
    to_minimization,
)
from fcasearch.report.analysis import Normalization, fit_normalization, hv_history, rank_trials
from fcasearch.report.build import ReportData, ReportPaths, build_report
from fcasearch.report.final import MixedRuntimeError, check_runtimes
from fcasearch.report.info import (
    HARDWARE_METRICS,
    MixedHardwareError,
    NoTrialsError,
    Objective,
    RunData,
    check_hardware,
    combine_runs,
    load_run,
    load_runs,
)
from fcasearch.report.training import (
    MixedBudgetError,
    MixedDataError,
    check_budgets,
    check_data,
)

__all__ = [
    "HARDWARE_METRICS",
    "HypervolumeDefinition",
    "MixedBudgetError",
    "MixedDataError",
    "MixedHardwareError",
    "MixedRuntimeError",
    "NoTrialsError",
    "Normalization",
    "Objective",
    "ReportData",
    "ReportPaths",
    "RunData",
    "attainment_surfaces",
    "build_report",
    "check_budgets",
    "check_data",
    "check_hardware",
    "check_runtimes",
    "combine_runs",
    "dominates",
    "fit_normalization",
    "hv_contributions",
    "hv_history",
    "hypervolume",
    "knee_point",
    "load_run",
    "load_runs",
    "non_dominated_sort",
    "pareto_mask",
    "rank_trials",
    "to_minimization",
]
