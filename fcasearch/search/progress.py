"""The search's progress bar: trials done, failures, Pareto size and hypervolume."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from fcasearch.search.options import Objective

__all__ = ["SearchProgress", "front_hypervolume"]


def front_hypervolume(
    rows: Sequence[dict[str, Any]], objectives: Sequence[Objective]
) -> tuple[int, float]:
    """(Pareto size, hypervolume) of the complete rows, objectives normalized to [0, 1] over
    those rows (maximized ones flipped) with the reference point 1.1 in every coordinate."""
    from fcasearch.report import hypervolume, pareto_mask
    from fcasearch.report.pareto import normalize_front

    names = [o.name for o in objectives]
    pts = [
        [float(r[n]) for n in names]
        for r in rows
        if r.get("status") == "complete"
        and all(np.isfinite(float(r.get(n, np.nan))) for n in names)
    ]
    if not pts:
        return 0, 0.0
    x = normalize_front(np.asarray(pts), [o.direction for o in objectives])
    front = x[pareto_mask(x)]
    return len(front), float(hypervolume(front, np.full(x.shape[1], 1.1)))


class SearchProgress:
    """A tqdm bar over trials (none when ``enabled`` is false), its postfix updated after every
    trial with the counts by status, the Pareto size and the hypervolume."""

    def __init__(
        self,
        total: int | None,
        objectives: Sequence[Objective],
        rows: Sequence[dict[str, Any]],
        enabled: bool = True,
    ) -> None:
        self.objectives = list(objectives)
        self.rows = list(rows)
        self.bar = None
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

    def _refresh(self) -> None:
        if self.bar is None:
            return
        c = self.counts()
        size, hv = front_hypervolume(self.rows, self.objectives)
        self.bar.set_postfix_str(
            f"ok {c['complete']} pruned {c['pruned']} infeasible {c['infeasible']} failed {c['failed']} | "
            f"pareto {size} hv {hv:.3f}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
