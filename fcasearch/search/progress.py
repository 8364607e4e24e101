"""The search's progress bar: trials done, failures, Pareto size and hypervolume.

The hypervolume is the run's own (:class:`fcasearch.pareto.HypervolumeDefinition`, fixed before
the first trial and stored in ``run.yaml``): bounds in the objectives' units, nothing rescaled
over the trials seen, so the number never falls while the search runs.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from fcasearch.pareto import HypervolumeDefinition, pareto_mask
from fcasearch.search.options import Objective

__all__ = ["SearchProgress", "front_hypervolume"]


def _complete_points(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> np.ndarray:
    pts = [
        [float(r[n]) for n in names]
        for r in rows
        if r.get("status") == "complete"
        and all(np.isfinite(float(r.get(n, np.nan))) for n in names)
    ]
    return np.asarray(pts, dtype=float).reshape(-1, len(names))


def front_hypervolume(
    rows: Sequence[dict[str, Any]],
    objectives: Sequence[Objective],
    definition: HypervolumeDefinition,
) -> tuple[int, float]:
    """(Pareto size, hypervolume) of the complete rows under the run's definition.

    The Pareto size counts complete rows with every objective measured that no other such row
    dominates; the hypervolume counts the objectives the definition includes (NaN when it
    includes none).
    """
    names = [o.name for o in objectives]
    pts = _complete_points(rows, names)
    size = int(pareto_mask(pts, [o.direction for o in objectives]).sum()) if len(pts) else 0
    if not definition.names:
        return size, math.nan
    idx = [names.index(n) for n in definition.names]
    return size, definition.value(pts[:, idx]) if len(pts) else 0.0


class SearchProgress:
    """A tqdm bar over trials (none when ``enabled`` is false), its postfix updated after every
    trial with the counts by status, the Pareto size and the run's hypervolume.

    Args:
        total: Trials to run (None: unknown).
        objectives: The run's objectives.
        rows: Rows already logged (a resumed run).
        enabled: Draw the bar.
        hypervolume: The run's definition; without one, accuracy in [0, 1] alone is not enough
            to say anything, so the bar shows no hypervolume.
    """

    def __init__(
        self,
        total: int | None,
        objectives: Sequence[Objective],
        rows: Sequence[dict[str, Any]],
        enabled: bool = True,
        hypervolume: HypervolumeDefinition | None = None,
    ) -> None:
        self.objectives = list(objectives)
        self.rows = list(rows)
        self.hypervolume = hypervolume
        self.bar = None
        if hypervolume is not None and hypervolume.excluded:
            left_out = "; ".join(f"{o.name}: {o.source}" for o in hypervolume.excluded)
            print(f"hypervolume: left out {left_out}", file=sys.stderr)
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                initial=0,
                desc="search",
                unit="trial",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self._refresh()

    def start_trial(self, number: int, spec: Any) -> None:
        if self.bar is not None:
            self.bar.set_description(f"trial {number} {spec.arch_id}")

    def finish_trial(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.bar is not None:
            self.bar.update(1)
        self._refresh()

    def counts(self) -> dict[str, int]:
        out = {"complete": 0, "pruned": 0, "infeasible": 0, "failed": 0}
        for r in self.rows:
            out[r.get("status", "failed")] = out.get(r.get("status", "failed"), 0) + 1
        return out

    def postfix(self) -> str:
        """The bar's postfix text."""
        c = self.counts()
        text = (
            f"ok {c['complete']} pruned {c['pruned']} infeasible {c['infeasible']} "
            f"failed {c['failed']}"
        )
        if self.hypervolume is None:
            return text
        size, hv = front_hypervolume(self.rows, self.objectives, self.hypervolume)
        shown = "n/a" if math.isnan(hv) else f"{hv:.4f}"
        return f"{text} | pareto {size} hv {shown}"

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
