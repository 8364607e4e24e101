"""Writers of a report: one self-contained HTML page (PNGs embedded as base64) and Markdown.

Both render a :class:`fcasearch.report.build.ReportData`; they format and lay out, they do not
compute anything new.
"""

from __future__ import annotations

import base64
import html
import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fcasearch.report.stability import LATENCY_COLUMNS, unstable_rows

if TYPE_CHECKING:
    from fcasearch.report.build import ReportData

__all__ = ["format_value", "render_html", "render_markdown"]

_UNITS = {
    "latency_ms": "ms",
    "latency_p90_ms": "ms",
    "latency_ms_search": "ms",  # the in-search median, where a final re-measurement replaced it
    "peak_mem_mb": "MiB",
    "train_mem_mb": "MiB",
    "energy_mj_per_image": "mJ",
    "throughput_ips": "img/s",
}


def _eng(v: float, digits: int = 3) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.{digits}g} {suffix}"
    return f"{v:.{digits}g}"


def format_value(column: str, value: Any, digits: int = 3) -> str:
    """A cell as text: NaN as an em dash, accuracy in %, params/MACs with k/M/G, units added.

    Args:
        column: Column name (decides the format).
        value: The value.
        digits: Significant digits of params, MACs and values with a unit (other numbers get
            at least 4).

    Returns:
        Text for a table cell.
    """
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int | float):
        if column in ("accuracy", "share"):
            return f"{value:.2%}"
        if column in _FRACTIONS:
            return f"{value:.4f}"
        if column in ("params", "macs"):
            return _eng(float(value), digits)
        if column in _UNITS:
            return f"{value:.{digits}g} {_UNITS[column]}"
        if float(value).is_integer():
            return str(int(value))
        return f"{value:.{max(4, digits)}g}"
    return str(value)


def distinct_digits(column: str, values: Sequence[Any], most: int = 8) -> int:
    """The fewest significant digits (3 at least) at which neighbouring different ``values`` read
    differently (``283.8 k`` and ``284.4 k``, not ``284 k`` twice): for a column sorted by value,
    such as the budget table's cost."""
    known = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    pairs = [(a, b) for a, b in itertools.pairwise(known) if a != b]
    for digits in range(3, most):
        if all(
            format_value(column, a, digits) != format_value(column, b, digits) for a, b in pairs
        ):
            return digits
    return most


_FRACTIONS = ("hypervolume", "hv_own", "hv_contribution", "hv_mean", "hv_std", "hv_min", "hv_max")
# cells that come from a latency measurement: marked when the row's latency_stable is False
LATENCY_CELLS = LATENCY_COLUMNS
UNSTABLE_MARK = "⚠"
UNSTABLE_TITLE = (
    "unstable: the latency stayed above the CV threshold after re-measuring; not an exact value"
)


def is_unstable(row: pd.Series, column: str) -> bool:
    """Whether ``row``'s ``column`` is a latency cell measured unstably: the one test of
    :func:`fcasearch.report.stability.unstable_rows`, asked of one row."""
    if column not in LATENCY_CELLS:  # most cells: no frame to build
        return False
    return bool(unstable_rows(pd.DataFrame([row]), column).iloc[0])


# --------------------------------------------------------------------------- HTML

_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --accent:#3b6fb6; --bg:#f7f8fa;
        --good:#2f855a; --bad:#c44e52; --warn:#b7791f; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink);
       background:var(--bg); }
main { max-width:1400px; margin:0 auto; padding:28px 24px 60px; }
header h1 { margin:0 0 4px; font-size:26px; }
header .sub { color:var(--muted); font-size:14px; }
h2 { font-size:19px; margin:34px 0 10px; padding-bottom:6px; border-bottom:2px solid var(--line); }
h3 { font-size:15px; margin:18px 0 8px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(250px,1fr)); gap:14px; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 16px;
        box-shadow:0 1px 2px rgba(0,0,0,.04); }
.card .tag { font-size:12px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); }
.card .big { font-size:24px; font-weight:650; margin:2px 0; }
.card .id { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:13px; color:var(--accent); }
.card .spec { font-size:12.5px; color:var(--muted); word-break:break-word; margin-top:6px; }
.card.knee { border-top:4px solid #f2b134; } .card.best { border-top:4px solid var(--accent); }
.card.cheap { border-top:4px solid var(--good); }
.lead { font-size:15.5px; margin:6px 0 14px; }
.table-wrap { overflow-x:auto; max-width:100%; background:#fff; border:1px solid var(--line);
              border-radius:8px; }
.table-wrap.fit { width:fit-content; max-width:100%; }
.cmds { background:#fff; border:1px solid var(--line); border-radius:8px; padding:8px 12px; overflow-x:auto; }
.cmds div { white-space:nowrap; padding:3px 0; font-size:12px; }
.cmds .id { display:inline-block; width:118px; font-family:ui-monospace,Menlo,monospace; color:var(--accent); }
.cmds code { word-break:normal; margin-right:10px; }
table { border-collapse:collapse; width:100%; font-size:12.5px; }
th { background:#eef1f5; text-align:left; font-weight:600; position:sticky; top:0;
     overflow-wrap:anywhere; }
th.num { text-align:right; }
th, td { padding:5px 7px; border-bottom:1px solid var(--line); vertical-align:top; }
tr:nth-child(even) td { background:#fafbfc; }
td { white-space:nowrap; } td.wrap { white-space:normal; min-width:160px; overflow-wrap:anywhere; }
td.unstable { color:var(--warn); } td.unstable span { margin-left:3px; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr.knee td { background:#fff7e0 !important; }
code { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:11.5px; background:#f1f3f5;
       padding:1px 4px; border-radius:4px; word-break:break-all; }
.figs { display:grid; grid-template-columns:repeat(auto-fit,minmax(520px,1fr)); gap:16px; }
figure { margin:0; background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px; }
figure.wide { grid-column:1/-1; }
figure img { width:100%; height:auto; display:block; }
figcaption { font-size:12.5px; color:var(--muted); margin-top:6px; }
.pill { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12.5px; margin-right:6px;
        background:#eef1f5; }
.pill.failed { background:#fde8e8; color:var(--bad); } .pill.infeasible { background:#fef3dc; color:var(--warn); }
.pill.complete { background:#e3f4ea; color:var(--good); }
.notes li { margin-bottom:4px; } .muted { color:var(--muted); }
"""


_WRAP = (
    "spec_short",
    "reason",
    "trials",
    "spec",
    "source",
)  # long text; other cells stay on one line


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _html_table(
    df: pd.DataFrame,
    columns: Sequence[str] | None = None,
    code_cols: Sequence[str] = (),
    row_class: Callable[[pd.Series], str] | None = None,
    headers: dict[str, str] | None = None,
    fit: bool = True,
    digits: dict[str, int] | None = None,
) -> str:
    cols = list(columns) if columns is not None else list(df.columns)
    headers = headers or {}
    digits = digits or {}
    numeric_cols = {
        c
        for c in cols
        if c in df
        and pd.api.types.is_numeric_dtype(df[c])
        and not pd.api.types.is_bool_dtype(df[c])
    }
    num_attr = ' class="num"'
    head = "".join(
        f"<th{num_attr if c in numeric_cols else ''}>{_breakable(headers.get(c, c))}</th>"
        for c in cols
    )
    body = []
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row.get(c)
            text = format_value(c, v, digits.get(c, 3))
            if c in code_cols and text != "—":
                cells.append(f"<td><code>{_esc(text)}</code></td>")
            elif is_unstable(row, c) and text != "—":
                cells.append(
                    f'<td class="num unstable" title="{_esc(UNSTABLE_TITLE)}">{_esc(text)}'
                    f"<span>{UNSTABLE_MARK}</span></td>"
                )
            else:
                numeric = isinstance(v, int | float) and not isinstance(v, bool)
                cls = ' class="num"' if numeric else (' class="wrap"' if c in _WRAP else "")
                cells.append(f"<td{cls}>{_esc(text)}</td>")
        cls = f' class="{row_class(row)}"' if row_class else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    wrap = "table-wrap fit" if fit else "table-wrap"
    return (
        f'<div class="{wrap}"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _breakable(text: str) -> str:
    """Escaped header text that may wrap after ``_`` and ``.`` (long metric names)."""
    return _esc(text).replace("_", "_<wbr>").replace(".", ".<wbr>")


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_esc(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _card(kind: str, tag: str, row: pd.Series | None, data: ReportData) -> str:
    if row is None:
        return ""
    q, cost = data.quality.name, data.cost
    cost_txt = f" · {_esc(format_value(cost, row[cost]))} {_esc(cost)}" if cost else ""
    return (
        f'<div class="card {kind}"><div class="tag">{_esc(tag)}</div>'
        f'<div class="big">{_esc(format_value(q, row[q]))}<span class="muted" style="font-size:14px">'
        f" {_esc(q)}{cost_txt}</span></div>"
        f'<div class="id">{_esc(row["arch_id"])}</div>'
        f'<div class="spec">{_esc(row.get("spec_short") or "")}</div></div>'
    )


def _summary_html(data: ReportData) -> str:
    out = ['<h2 id="answer">Which architecture should I train?</h2>']
    if not len(data.pareto):
        out.append(
            '<p class="lead">No complete trial has every objective measured, so there is '
            "no front yet. See the trials below.</p>"
        )
        return "".join(out)
    out.append(f'<p class="lead">{_esc(data.headline)}</p><div class="cards">')
    picks = data.picks
    out.append(_card("best", f"best {data.quality.name}", picks.get("best"), data))
    out.append(_card("knee", "balanced choice (knee)", picks.get("knee"), data))
    out.append(_card("cheap", f"cheapest on the front ({data.cost})", picks.get("cheap"), data))
    out.append("</div>")
    if data.cost and len(data.budget):
        out.append(f"<h3>Best {_esc(data.quality.name)} for your budget of {_esc(data.cost)}</h3>")
        out.append(
            '<p class="muted">Find the last row whose budget you can afford: nothing at that '
            f"cost or less scored better. {_esc(data.budget_note)}</p>"
        )
        cols = [data.cost, "arch_id", data.quality.name, *data.budget_extra, "spec_short"]
        out.append(
            _html_table(
                data.budget,
                cols,
                headers={data.cost: f"{data.cost} budget (at most)"},
                row_class=lambda r: "knee" if bool(r.get("knee")) else "",
                digits={data.cost: distinct_digits(data.cost, data.budget[data.cost].tolist())},
            )
        )
    return "".join(out)


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document with embedded figures.

    Args:
        data: Everything the report shows.

    Returns:
        HTML text; it references no external file.
    """
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_esc(data.title)}</title><style>{_CSS}</style></head><body><main>",
        f"<header><h1>{_esc(data.title)}</h1><div class='sub'>{_esc(data.subtitle)}</div></header>",
        _summary_html(data),
        '<h2 id="runs">Runs and trials</h2>',
        _status_pills(data),
        _html_table(data.counts, headers={"run_label": "run"}),
        "<h3>Hypervolume</h3>",
        f'<p class="muted">{_esc(data.hv_sentence)}</p>',
        _html_table(data.per_run, headers={"run_label": "run"}),
    ]
    if data.front_note:
        parts.append(f'<p class="muted">{_esc(data.front_note)}</p>')
    if len(data.per_sampler) and len(data.per_run) > 1:
        parts += ["<h3>Per sampler (mean ± sd over runs)</h3>", _html_table(data.per_sampler)]
        if data.sampler_note:
            parts.append(f'<p class="muted">{_esc(data.sampler_note)}</p>')
    if data.figures:
        parts.append('<h2 id="figures">Figures</h2><div class="figs">')
        for key, (path, caption) in data.figures.items():
            wide = " class='wide'" if key in ("arch_spread", "hv_history", "pairs") else ""
            parts.append(
                f"<figure{wide}>{_img(path)}<figcaption>{_esc(caption)}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append(f'<h2 id="pareto">Pareto set ({len(data.pareto)} trials)</h2>')
    if len(data.pareto):
        parts.append(
            '<p class="muted">Sorted by the primary cost; the knee row is highlighted. '
            "Also in <code>pareto.csv</code>, with the full spec JSON.</p>"
        )
        cols = [c for c in data.pareto_columns if c not in ("profile_cmd", "rebuild_cmd")]
        parts.append(
            _html_table(
                data.pareto,
                cols,
                fit=False,
                row_class=lambda r: "knee" if bool(r.get("knee")) else "",
            )
        )
        parts.append(_commands_html(data.pareto))
    parts.append('<h2 id="not-on-front">Trials not on the front: failed, infeasible, pruned</h2>')
    if len(data.details):
        parts.append(_html_table(data.details))
    else:
        parts.append("<p>Every trial completed with all objectives measured.</p>")
    parts.append('<h2 id="method">Method and notes</h2>')
    parts.append(f"<p>{_esc(data.method_text)}</p>")
    parts.append(_html_table(pd.DataFrame(data.hv.records())))
    if data.notes:
        parts.append("<h3>Notes</h3><ul class='notes'>")
        parts += [f"<li>{_esc(n)}</li>" for n in data.notes]
        parts.append("</ul>")
    if data.fingerprints:
        parts.append("<h3>Hardware</h3><ul class='notes'>")
        parts += [
            f"<li><code>{_esc(k)}</code> {_esc(v)}</li>" for k, v in data.fingerprints.items()
        ]
        parts.append("</ul>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _commands_html(pareto: pd.DataFrame) -> str:
    rows = [r for _, r in pareto.iterrows() if isinstance(r.get("profile_cmd"), str)]
    if not rows:
        return ""
    lines = "".join(
        f'<div><span class="id">{_esc(r["arch_id"])}</span><code>{_esc(r["profile_cmd"])}</code>'
        f"<code>{_esc(r['rebuild_cmd'])}</code></div>"
        for r in rows
    )
    return (
        "<h3>Profile on your hardware, or rebuild</h3><p class='muted'>Each Pareto spec is "
        f"saved under <code>specs/</code>.</p><div class='cmds'>{lines}</div>"
    )


def _status_pills(data: ReportData) -> str:
    totals = data.counts.drop(columns=["run_label"]).sum(numeric_only=True)
    pills = []
    for name in (
        "total",
        "complete",
        "on_front",
        "pruned",
        "infeasible",
        "failed",
        "missing_objective",
    ):
        if name in totals and (totals[name] or name in ("total", "complete")):
            pills.append(
                f'<span class="pill {name}">{_esc(name.replace("_", " "))}: '
                f"{int(totals[name])}</span>"
            )
    return f"<p>{''.join(pills)}</p>"


# --------------------------------------------------------------------------- Markdown


def _md_table(
    df: pd.DataFrame,
    columns: Sequence[str] | None = None,
    code_cols: Sequence[str] = (),
    digits: dict[str, int] | None = None,
) -> str:
    cols = list(columns) if columns is not None else list(df.columns)
    digits = digits or {}
    if not len(df):
        return "_none_\n"

    def cell(c: str, row: pd.Series) -> str:
        text = format_value(c, row.get(c), digits.get(c, 3))
        text = text.replace("|", "\\|").replace("\n", " ")
        if is_unstable(row, c) and text != "—":
            text += f" {UNSTABLE_MARK} unstable"
        return f"`{text}`" if c in code_cols and text != "—" else text

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(c, row) for c in cols) + " |" for _, row in df.iterrows()]
    return "\n".join(lines) + "\n"


def render_markdown(data: ReportData, figure_dir: str = "figures") -> str:
    """The report as Markdown; figures are linked relative to the report directory.

    Args:
        data: Everything the report shows.
        figure_dir: Folder of the PNGs, relative to ``report.md``.

    Returns:
        Markdown text.
    """
    out = [f"# {data.title}", "", data.subtitle, "", "## Which architecture should I train?", ""]
    if len(data.pareto):
        out += [data.headline, ""]
        for key, tag in (
            ("best", f"best {data.quality.name}"),
            ("knee", "balanced (knee)"),
            ("cheap", "cheapest on the front"),
        ):
            row = data.picks.get(key)
            if row is not None:
                q = format_value(data.quality.name, row[data.quality.name])
                c = f", {format_value(data.cost, row[data.cost])} {data.cost}" if data.cost else ""
                out.append(
                    f"- **{tag}**: `{row['arch_id']}` {q}{c} — {row.get('spec_short') or ''}"
                )
        if data.cost and len(data.budget):
            out += ["", f"### Best {data.quality.name} for a budget of {data.cost}", ""]
            if data.budget_note:
                out += [data.budget_note, ""]
            out.append(
                _md_table(
                    data.budget,
                    [data.cost, "arch_id", data.quality.name, *data.budget_extra, "spec_short"],
                    digits={data.cost: distinct_digits(data.cost, data.budget[data.cost].tolist())},
                )
            )
    else:
        out.append("No complete trial has every objective measured: no front yet.")
    out += [
        "",
        "## Runs and trials",
        "",
        _md_table(data.counts),
        "### Hypervolume",
        "",
        data.hv_sentence,
        "",
        _md_table(data.per_run),
    ]
    if data.front_note:
        out += [data.front_note, ""]
    if len(data.per_run) > 1:
        out += ["### Per sampler", "", _md_table(data.per_sampler)]
        if data.sampler_note:
            out += [data.sampler_note, ""]
    if data.figures:
        out += ["## Figures", ""]
        for path, caption in data.figures.values():
            out += [f"![{Path(path).stem}]({figure_dir}/{Path(path).name})", "", f"_{caption}_", ""]
    out += [f"## Pareto set ({len(data.pareto)} trials)", ""]
    out.append(
        _md_table(data.pareto, data.pareto_columns, code_cols=("profile_cmd", "rebuild_cmd"))
    )
    out += ["## Trials not on the front: failed, infeasible, pruned", "", _md_table(data.details)]
    out += [
        "## Method and notes",
        "",
        data.method_text,
        "",
        _md_table(pd.DataFrame(data.hv.records())),
    ]
    out += [f"- {n}" for n in data.notes]
    out += [f"- hardware `{k}`: {v}" for k, v in data.fingerprints.items()]
    return "\n".join(out) + "\n"
