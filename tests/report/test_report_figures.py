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


def test_tables_reasons_ticks_and_captions_ask_one_question_of_unstable_latency(drawn, tmp_path):
    from fcasearch.report.analysis import _unstable_mark
    from fcasearch.report.html import is_unstable
    from fcasearch.report.stability import unstable_rows

    # unstable; stable; no flag (None, NaN: stable); unstable flag but no value (nothing to mark)
    rows = pd.DataFrame(
        {
            "uid": ["r#0", "r#1", "r#2", "r#3", "r#4"],
            "latency_ms": [1.2, 1.4, 1.3, 1.5, np.nan],
            "latency_stable": pd.Series([False, True, None, np.nan, False], dtype=object),
        }
    )
    expected = [True, False, False, False, False]
    assert unstable_rows(rows, "latency_ms").tolist() == expected
    assert not unstable_rows(rows, "uid").any()  # only latency columns are ever unstable
    assert marks.unstable_mask(rows, "latency_ms").tolist() == expected
    assert [is_unstable(row, "latency_ms") for _, row in rows.iterrows()] == expected
    assert _unstable_mark(rows) == " ⚠ unstable latency: r#0"
    # the ticks drawn for infeasible trials: exactly the rows the caption is decided on
    plot.quality_vs_cost_figure(
        _ranked(), _ranked().iloc[:0], "accuracy", "latency_ms", tmp_path / "f.png",
        infeasible=rows,
    )  # fmt: skip
    labels = drawn[0].axes[0].get_legend_handles_labels()[1]
    assert "infeasible, unstable latency (1)" in labels, labels
