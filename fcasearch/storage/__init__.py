"""Results directories: layout, the durable trial log, exports (see results/README.md)."""

from __future__ import annotations

from fcasearch.storage.records import RunDir, TrialLog, pareto_rows

__all__ = ["RunDir", "TrialLog", "pareto_rows"]
