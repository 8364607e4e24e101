"""What the report's figures draw: every infeasible trial with a latency, and accuracy tick labels
that tell neighbouring ticks apart."""

from __future__ import annotations

import matplotlib.collections as mcollections
import numpy as np
import pandas as pd
import pytest

plot = pytest.importorskip("fcasearch.report.plot")
marks = pytest.importorskip("fcasearch.report.plot_marks")


@pytest.fixture
def drawn(monkeypatch):
    """Figures kept open instead of saved: ``drawn`` lists them."""
    figs = []
    monkeypatch.setattr(plot, "_save", lambda fig, path: figs.append(fig) or path)
    yield figs
    plot.plt.close("all")


def _ranked() -> pd.DataFrame:
    """Three complete trials, accuracy within 2.5 points (a run like /tmp/verify/c)."""
    return pd.DataFrame(
        {
            "accuracy": [0.919220, 0.902507, 0.927577],
            "latency_ms": [0.9218, 1.1866, 1.1753],
            "latency_stable": [True, True, True],
            "on_front": [True, False, True],
            "knee": [True, False, False],
            "arch_id": ["a2c1eb5629c9", "b" * 12, "abca63b0a17c"],
        }
    )


def test_every_infeasible_latency_is_drawn_and_counted(drawn, tmp_path):
    # the first one's latency stayed unstable: it was dropped from the rug and the count
    infeasible = pd.DataFrame(
        {
            "latency_ms": [1.2085, 1.4282, 1.4615, 1.2664, np.nan],
            "latency_stable": [False, True, True, True, True],
        }
    )
    ranked = _ranked()
    stair = ranked[ranked["on_front"]].sort_values("latency_ms")
    plot.quality_vs_cost_figure(
        ranked, stair, "accuracy", "latency_ms", tmp_path / "f.png", infeasible=infeasible
    )
    (ax,) = drawn[0].axes
    labels = ax.get_legend_handles_labels()[1]
    counted = [label for label in labels if label.startswith("infeasible")]
    assert counted == ["infeasible, stable latency (3)", "infeasible, unstable latency (1)"]
    ticks = [
        len(c.get_segments()) for c in ax.collections if isinstance(c, mcollections.LineCollection)
    ]
    assert sum(ticks) == 4
    lo, hi = ax.get_xlim()
    assert lo <= 1.2085 <= hi


def test_accuracy_tick_labels_differ(drawn, tmp_path):
    ranked = _ranked()
    stair = ranked[ranked["on_front"]].sort_values("latency_ms")
    plot.quality_vs_cost_figure(ranked, stair, "accuracy", "latency_ms", tmp_path / "f.png")
    (ax,) = drawn[0].axes
    drawn[0].canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert marks.percent_decimals([0.90, 0.905, 0.91]) == 1
    assert marks.percent_decimals([0.9, 0.92, 0.94]) == 0
    assert marks.percent_decimals([0.9025, 0.905]) == 2
