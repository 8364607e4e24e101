"""Multi-objective architecture search: options, the trial objective, executors, resume."""

from __future__ import annotations

from fcasearch.search.options import Objective, SearchError, SearchOptions, parse_objectives

__all__ = ["Objective", "SearchError", "SearchOptions", "parse_objectives", "run_search"]


def run_search(*args, **kwargs):
    """See :func:`fcasearch.search.runner.run_search` (imported lazily: it pulls in torch)."""
    from fcasearch.search.runner import run_search as _run

    return _run(*args, **kwargs)
