"""What a report's reader must not over-read, said beside the figures it concerns.

* Final latencies of several runs: each run re-measures its own Pareto set and reference models in
  its own final session (:mod:`fcasearch.search.final`). Within one run those figures are taken
  side by side, so their ranking is fair; across runs they are not, and a reference model two runs
  both measured shows by how much sessions differ (:func:`finals_across_runs`).
* Front sizes: the hypervolume table counts each run's own front on the in-search figures; the
  Pareto set is the front of all runs together, less any member another dominates under the final
  figures (:func:`front_size_note`).
* Samplers compared with one run each have no spread to judge a difference by
  (:func:`sampler_note`).

Each function returns one sentence (or a few), empty when there is nothing to say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from fcasearch.report.info import RunData

__all__ = ["finals_across_runs", "front_size_note", "sampler_note"]


def _reference_finals(final: Mapping[str, Any] | None) -> dict[str, float]:
    """model -> final latency (ms) of the reference models a final.json measured."""
    out = {}
    for m in (final or {}).get("models", []):
        value = m.get("final_latency_ms")
        if (
            m.get("kind") == "reference"
            and m.get("status", "ok") == "ok"
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        ):
            out[str(m.get("model") or m.get("name"))] = float(value)
    return out


def _widest_disagreement(
    runs: Sequence[RunData], finals: Mapping[str, Mapping[str, Any] | None]
) -> str:
    """``deit_s_like: 7.92 ms in q, 7.35 ms in r``: the reference model whose final latencies in
    two runs' final rounds differ most (as a ratio); empty when no model was measured twice."""
    by_model: dict[str, dict[str, float]] = {}
    for run in runs:
        for model, ms in _reference_finals(finals.get(run.label)).items():
            by_model.setdefault(model, {})[run.label] = ms
    best: tuple[float, str] | None = None
    for model, values in by_model.items():
        if len(values) < 2:
            continue
        hi_run, hi = max(values.items(), key=_value)
        lo_run, lo = min(values.items(), key=_value)
        text = f"{model}: {hi:.3g} ms in {hi_run}, {lo:.3g} ms in {lo_run}"
        if best is None or hi / lo > best[0]:
            best = (hi / lo, text)
    return best[1] if best else ""


def _value(item: tuple[str, float]) -> float:
    return item[1]


def finals_across_runs(
    runs: Sequence[RunData],
    finals: Mapping[str, Mapping[str, Any] | None],
    markers_from: str | None = None,
) -> str:
    """A note for a report of several runs of which some have final rounds: their final figures
    come from separate sessions, so Pareto members of different runs are not ranked fairly by
    them (module docstring).

    Args:
        runs: The runs reported.
        finals: Each run's ``final.json`` content by label (None: none).
        markers_from: The run whose own measurements give reference markers, if any (the
            third value of :func:`fcasearch.report.references.report_references`); other
            markers are the paper's or a ``--profile`` CSV's.
    """
    with_final = [r.label for r in runs if finals.get(r.label)]
    if len(runs) < 2 or not with_final:
        return ""
    if len(with_final) == 1:
        text = (
            f"Only run {with_final[0]} has final rounds: its Pareto members show final figures, "
            "the other runs' members in-search ones, and the two were not measured side by side."
        )
    else:
        text = (
            f"Runs {', '.join(with_final)} each re-measured their Pareto set and reference models "
            "in their own final session: within one run those figures were taken side by side, "
            "across runs they were not, so the final latencies of Pareto members from different "
            "runs do not rank them fairly."
        )
    widest = _widest_disagreement(runs, finals)
    if widest:
        text += f" The same reference model measured in two runs' final rounds: {widest}."
    if markers_from is not None:
        text += (
            f" The reference markers measured with a run are run {markers_from}'s (from its "
            "final session where it had one); any others come from the paper or --profile."
        )
    return text


def front_size_note(per_run: pd.DataFrame, pareto_size: int, left: int, n_runs: int) -> str:
    """What ``front_size_in_search`` counts, and why the Pareto set's size may differ.

    Args:
        per_run: Output of :func:`fcasearch.report.hypervolumes.hv_summary`.
        pareto_size: Trials in the report's Pareto set.
        left: Members of the in-search front another member dominates under the final figures.
        n_runs: Runs reported.
    """
    if "front_size_in_search" not in per_run or not len(per_run):
        return ""
    text = (
        "front_size_in_search: each run's own front (non-dominated among its own trials) on the "
        "in-search figures every trial has, the front its hypervolume measures."
    )
    if n_runs == 1 and not left:
        return text
    whole = (
        "the front of all runs' trials together (on_front above counts each run's members)"
        if n_runs > 1
        else "that front"
    )
    less = (
        f", less {left} member(s) another member dominates under the final re-measured figures "
        "(see the notes)"
        if left
        else ""
    )
    return f"{text} The Pareto set ({pareto_size} trials) is {whole}{less}."


def sampler_note(per_sampler: pd.DataFrame) -> str:
    """A caveat for samplers compared with a single run each (no spread to judge by)."""
    if len(per_sampler) < 2 or "runs" not in per_sampler:
        return ""
    single = per_sampler.loc[per_sampler["runs"] == 1, "sampler"].astype(str).tolist()
    if not single:
        return ""
    if len(single) == len(per_sampler):
        who = "One run per sampler"
    else:
        who = f"{', '.join(single)}: one run {'each' if len(single) > 1 else 'only'}"
    return (
        f"{who}, so no spread: a difference in hypervolume between samplers is not evidence that "
        "one searches better (one run's value moves with its seed); run several seeds of each."
    )
