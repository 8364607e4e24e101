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

    names = [o.name for o in objectives]
    pts = [
        [float(r[n]) * o.sign for n, o in zip(names, objectives)]
        for r in rows
        if r.get("status") == "complete"
        and all(np.isfinite(float(r.get(n, np.nan))) for n in names)
    ]
    if not pts:
        return 0, 0.0
    x = np.asarray(pts, dtype=float)
    front = x[pareto_mask(x)]
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    norm = (front - lo) / span
    return len(front), float(hypervolume(norm, np.full(x.shape[1], 1.1)))


class SearchProgress:
    """A tqdm bar over trials (off when ``enabled`` is false or stderr is not a terminal and
    ``force`` is false); one summary line per trial in the bar's postfix."""

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
