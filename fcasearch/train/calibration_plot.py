"""Drawing a calibration: accuracy at the long budget against each predictor (seaborn, lazily).

Only draws what :mod:`fcasearch.train.calibrate` computed; seaborn and matplotlib are imported
inside :func:`plot_calibration`, so importing this module stays light.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_calibration"]

_LABELS = {"acc_short": "short-budget accuracy", "params": "#params", "macs": "MACs"}


def _title(row: pd.Series) -> str:
    if math.isnan(row["spearman"]):
        return f"{row['predictor']}: n={row['n']}, no correlation"
    return f"{row['predictor']}: ρ={row['spearman']:.2f}  τ={row['kendall']:.2f}  (n={row['n']})"


def plot_calibration(
    table: pd.DataFrame, correlations: pd.DataFrame, path: str | Path, *, long_label: str = ""
) -> Path:
    """Save a grid of scatter plots, ``acc_long`` against each predictor, titled with ρ and τ.

    Args:
        table: :attr:`CalibrationResult.table`.
        correlations: :attr:`CalibrationResult.correlations` (its predictors pick the panels).
        path: the image to write (``.png``, ``.pdf``, ``.svg``).
        long_label: the long budget, for the y axis label.

    Returns:
        ``path``.
    """
    import seaborn as sns
    from matplotlib.figure import Figure

    predictors = list(correlations["predictor"])
    cols = min(4, max(1, len(predictors)))
    rows = math.ceil(len(predictors) / cols)
    fig = Figure(figsize=(3.6 * cols, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (_, corr) in zip(axes, correlations.iterrows()):
        name = corr["predictor"]
        frame = table[[name, "acc_long"]].astype(float).replace([np.inf, -np.inf], np.nan).dropna()
        sns.scatterplot(data=frame, x=name, y="acc_long", ax=ax, s=28)
        values = frame[name]
        if len(values) and (values > 0).all() and values.max() / values.min() > 100:
            ax.set_xscale("log")
        ax.set_title(_title(corr), fontsize=9)
        ax.set_xlabel(_LABELS.get(name, name))
        ax.set_ylabel(f"accuracy {long_label}".strip())
    for ax in axes[len(predictors) :]:
        ax.set_visible(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
