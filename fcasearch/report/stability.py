"""Which values of a report come from a latency measurement that stayed unstable.

A latency whose coefficient of variation stayed above the threshold after re-measuring is
recorded with ``latency_stable`` False (DESIGN.md, "a noisy cell is not a number"). Every place
that marks such a value (table cells, the failed/infeasible reasons, the figures' ticks and
their captions) asks :func:`unstable_rows`, so that what a caption announces is what is drawn.
No matplotlib here: tables and figures alike import it.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["LATENCY_COLUMNS", "unstable_rows"]

# the columns a latency measurement gives; their values are unstable where latency_stable is False
LATENCY_COLUMNS = ("latency_ms", "latency_p90_ms", "latency_cv", "throughput_ips")


def unstable_rows(df: pd.DataFrame, column: str) -> pd.Series:
    """Rows of ``df`` whose ``column`` holds a value from an unstable latency measurement.

    A row is marked when ``column`` is one of :data:`LATENCY_COLUMNS`, its value is present
    (not NaN) and its ``latency_stable`` is False; a missing flag (no column, NaN, None) counts
    as stable.

    Args:
        df: Trial rows.
        column: The column asked about.

    Returns:
        A boolean Series on ``df``'s index.
    """
    if column not in LATENCY_COLUMNS or column not in df or "latency_stable" not in df:
        return pd.Series(False, index=df.index, dtype=bool)
    flag = df["latency_stable"].astype(object)
    stable = flag.where(flag.notna(), True).astype(bool)
    return ~stable & df[column].notna()
