"""Build a report from one or more results directories: tables, figures, HTML, Markdown, CSV.

:func:`build_report` is the one public entry point; the CLI (``fcasearch report``) and
``report.py`` call it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from fcasearch.pareto import HypervolumeDefinition, common_definition, parse_hv_reference
from fcasearch.report import analysis as an
from fcasearch.report.caveats import finals_across_runs, front_size_note, sampler_note
from fcasearch.report.figures import draw_figures
from fcasearch.report.final import (
    FINAL_COLUMNS,
    apply_final,
    check_runtimes,
    final_sentence,
    search_figures,
)
from fcasearch.report.headline import headline, hv_sentence, pick
from fcasearch.report.html import render_html, render_markdown
from fcasearch.report.info import (
    Objective,
    RunData,
    check_hardware,
    combine_runs,
    load_runs,
)
from fcasearch.report.references import report_references
from fcasearch.report.training import (
    check_budgets,
    check_data,
    subtitle_training,
    training_text,
    unrecorded_note,
)

__all__ = ["ReportData", "ReportPaths", "build_report"]


@dataclass(frozen=True)
class ReportPaths:
    """Where a report was written.

    Attributes:
        out_dir: The report directory.
        html: ``index.html`` (self-contained).
        markdown: ``report.md``.
        pareto_csv: ``pareto.csv``, the Pareto set with every metric and the spec JSON.
        summary_json: ``summary.json``: hypervolumes and their definition, counts, picks.
        specs_dir: ``specs/``, one ``<arch_id>.json`` per Pareto architecture.
        figures: The PNGs written.
        warnings: One-line problems met while loading (a corrupt ``trials.parquet``, ...).
    """

    out_dir: Path
    html: Path
    markdown: Path
    pareto_csv: Path
    summary_json: Path
    specs_dir: Path
    figures: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass
class ReportData:
    """Everything a report shows, computed before anything is rendered."""

    title: str
    subtitle: str
    runs: list[RunData]
    quality: Objective
    cost: str | None
    objectives: tuple[Objective, ...]
    hv: HypervolumeDefinition
    trials: pd.DataFrame
    ranked: pd.DataFrame
    # the same rows with the in-search figures every trial has (fcasearch.report.final), which the
    # budget table and the figures compare trials with
    ranked_in_search: pd.DataFrame
    pareto: pd.DataFrame
    pareto_columns: list[str]
    budget: pd.DataFrame
    budget_extra: list[str]
    budget_note: str
    picks: dict[str, pd.Series]
    per_run: pd.DataFrame
    per_sampler: pd.DataFrame
    history: pd.DataFrame
    counts: pd.DataFrame
    details: pd.DataFrame
    references: pd.DataFrame
    combined_hv: float
    attainment: dict[str, list[str]] = field(default_factory=dict)
    headline: str = ""
    hv_sentence: str = ""
    # what the hypervolume table's front_size_in_search counts; the per-sampler caveat
    front_note: str = ""
    sampler_note: str = ""
    method_text: str = ""
    notes: list[str] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)
    figures: dict[str, tuple[Path, str]] = field(default_factory=dict)


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _trial_list(df: pd.DataFrame) -> str:
    labels = df["run_label"].astype(str) + " trial " + df["trial"].map(lambda t: f"{int(t)}")
    return ", ".join(labels)


def _write_specs(pareto: pd.DataFrame, specs_dir: Path, device: str) -> pd.DataFrame:
    specs_dir.mkdir(parents=True, exist_ok=True)
    profile, rebuild = [], []
    for _, row in pareto.iterrows():
        spec = row.get("spec")
        if spec is None or pd.isna(spec) or not str(spec).strip():
            profile.append(np.nan)
            rebuild.append(np.nan)
            continue
        try:
            text = json.dumps(json.loads(str(spec)), indent=2, sort_keys=True)
        except ValueError:
            text = str(spec)
        path = specs_dir / f"{row['arch_id']}.json"
        path.write_text(text + "\n")
        shown = _display_path(path)
        profile.append(f"fcasearch profile {shown} --device {device}")
        rebuild.append(f"fcasearch summary {shown}")
    return pareto.assign(profile_cmd=profile, rebuild_cmd=rebuild)


def _budget_note(columns: Sequence[str], ranked: pd.DataFrame) -> str:
    """What the budget table says of its figures where the Pareto table shows final ones: its
    cost and extra columns are the in-search figures every trial has (the same header shows the
    final figure in the Pareto table)."""
    shown = [c for c in columns if c in FINAL_COLUMNS]
    if (
        not shown
        or "latency_source" not in ranked
        or not (ranked["latency_source"] == "final").any()
    ):
        return ""
    if len(shown) == 1:
        return f"Its {shown[0]} is the in-search figure every trial has, not the Pareto set's final one."
    return (
        f"Its {', '.join(shown)} are the in-search figures every trial has, not the Pareto set's "
        "final ones."
    )


def build_report(
    run_dirs: Sequence[str | Path] | str | Path,
    out_dir: str | Path | None = None,
    *,
    hv_reference: Mapping[str, object] | Sequence[str] | None = None,
    allow_mixed_hardware: bool = False,
    allow_mixed_runtimes: bool = False,
    allow_mixed_data: bool = False,
    allow_mixed_budgets: bool = False,
    profile: str | Path | None = None,
    device: str | None = None,
    figures: bool = True,
    title: str | None = None,
) -> ReportPaths:
    """Write a Pareto report for one or more results directories.

    Args:
        run_dirs: Results directories (``results/<run>``) sharing their objectives.
        out_dir: Report directory; ``<first run>/report`` if omitted.
        hv_reference: Hypervolume references in the objectives' units
            (``["latency_ms=50"]`` or ``{"latency_ms": 50}``): the runs are then compared under
            their definition with these references set. Without it each run keeps its own
            definition (``run.yaml``), and runs whose definitions differ are compared under
            :func:`fcasearch.pareto.common_definition`.
        allow_mixed_hardware: Report hardware-dependent objectives measured on several machines
            instead of raising :class:`~fcasearch.report.info.MixedHardwareError`.
        allow_mixed_runtimes: Report runtime-dependent objectives measured on several runtimes
            instead of raising :class:`~fcasearch.report.final.MixedRuntimeError`.
        allow_mixed_data: Report accuracy of runs trained on different data (dataset, subset)
            instead of raising :class:`~fcasearch.report.training.MixedDataError`.
        allow_mixed_budgets: Report accuracy of runs trained with different budgets instead of
            raising :class:`~fcasearch.report.training.MixedBudgetError`.
        profile: A ``fcasearch profile`` CSV (or the JSON written beside it) of reference models (latency/memory markers drawn
            only when measured on the runs' hardware).
        device: Device named in the profile commands; the run's device if omitted.
        figures: Draw the PNG figures (seaborn); False writes tables only.
        title: Page title.

    Returns:
        The paths written.

    Raises:
        FileNotFoundError: If a directory, its ``run.yaml`` or its trials are missing.
        MixedHardwareError: See ``allow_mixed_hardware``.
        MixedRuntimeError: See ``allow_mixed_runtimes``.
        MixedDataError: See ``allow_mixed_data``.
        MixedBudgetError: See ``allow_mixed_budgets``.
        ValueError: If the runs have different objectives or ``hv_reference`` is invalid.
    """
    if isinstance(run_dirs, str | Path):
        run_dirs = [run_dirs]
    runs = load_runs(run_dirs)
    fingerprints, notes = check_hardware(runs, allow_mixed_hardware)
    _, more = check_runtimes(runs, allow_mixed_runtimes)
    notes += more
    notes += check_data(runs, allow_mixed_data) + check_budgets(runs, allow_mixed_budgets)
    notes += [n for n in [unrecorded_note(runs)] if n]
    finals = {run.label: apply_final(run) for run in runs}  # final latency figures win
    final_notes = [final_sentence(r, finals[r.label]) for r in runs if finals[r.label]]
    notes = final_notes + notes
    for run in runs:
        notes += run.notes
    objectives = runs[0].objectives
    trials = combine_runs(runs)
    # which trials form the front, and the hypervolumes, come from the figures every trial was
    # measured with; the Pareto set then shows its final ones (fcasearch.report.final)
    searched = search_figures(trials)
    ranked_searched = an.rank_trials(searched, objectives)
    ranked, left = an.confirm_front(trials, ranked_searched, objectives)
    if len(left):
        notes.append(
            f"{len(left)} trial(s) of the in-search front ({_trial_list(left)}) left it: another "
            "member dominates them under the final re-measured figures."
        )
    own = {r.label: r.hypervolume for r in runs if r.hypervolume is not None}
    hv = common_definition(list(own.values()))
    if hv_reference:
        source = "the report's --hv-reference"
        hv = hv.with_references(parse_hv_reference(hv_reference, source=source), source)
    q_name, cost = an.pick_quality_and_cost(objectives, list(trials.columns))
    quality = next(o for o in objectives if o.name == q_name)
    metrics = an.metric_columns(ranked, objectives)
    front = ranked[ranked["on_front"]]
    sort_by = cost if cost else objectives[0].name
    front = front.sort_values(sort_by, kind="stable")
    out = Path(out_dir) if out_dir is not None else runs[0].path / "report"
    out.mkdir(parents=True, exist_ok=True)
    specs_dir = out / "specs"
    pareto = _write_specs(front, specs_dir, device or runs[0].device)
    multi = len(runs) > 1
    pareto_columns = [
        "arch_id",
        *(["run_label"] if multi else []),
        "trial",
        "spec_short",  # early, so that it shows on a narrow screen
        *metrics,
        # beside the final figure, what the search measured (fcasearch.report.final)
        *(["latency_ms_search"] if "latency_ms" in metrics and any(finals.values()) else []),
        "hv_contribution",
        "profile_cmd",
        "rebuild_cmd",
    ]
    refs, ref_notes, drawn = report_references(runs, fingerprints, profile, finals)
    notes += ref_notes
    across = finals_across_runs(runs, finals, drawn)
    if across:  # beside the runs' final-rounds notes
        notes.insert(len(final_notes), across)
    # on the figures every trial has, like the front (a final figure beside an in-search one
    # would decide the budget rows across two measurements)
    ranked_in_search = search_figures(ranked)
    budget = an.budget_table(ranked_in_search, quality, cost) if cost else ranked.iloc[0:0]
    extra = [o.name for o in objectives if o.name not in (q_name, cost)]
    extra += [
        c
        for c in ("params", "macs")
        if c not in extra and c not in (q_name, cost) and c in ranked and ranked[c].notna().any()
    ]
    per_run = an.hv_summary(searched, ranked_searched, hv, own, objectives)
    per_sampler = an.sampler_summary(per_run)
    names = list(hv.names)
    searched_front = ranked_searched[ranked_searched["on_front"]]
    combined = hv.value(searched_front[names].to_numpy(dtype=float)) if names else np.nan
    if names and len(pareto):
        own_values = searched.loc[pareto.index, names].to_numpy(dtype=float)
        pareto = pareto.assign(hv_contribution=hv.contributions(own_values))
    data = ReportData(
        title=title or "fcasearch report: " + ", ".join(r.label for r in runs),
        subtitle=_subtitle(runs, objectives),
        runs=runs,
        quality=quality,
        cost=cost,
        objectives=tuple(objectives),
        hv=hv,
        trials=trials,
        ranked=ranked,
        ranked_in_search=ranked_in_search,
        pareto=pareto,
        pareto_columns=pareto_columns,
        budget=budget,
        budget_extra=extra[:3],
        budget_note=_budget_note([cost, *extra[:3]] if cost else [], ranked),
        picks=pick(front, quality, cost),
        per_run=per_run,
        per_sampler=per_sampler,
        history=an.hv_history(searched, ranked_searched, hv),
        counts=an.status_counts(trials, ranked),
        details=an.status_details(trials, ranked),
        references=refs,
        combined_hv=combined,
        notes=notes,
        fingerprints=fingerprints,
        attainment=an.attainment_groups({r.label: r.config for r in runs}),
    )
    data.headline = headline(data, len(trials))
    if len(final_notes) == 1 and len(runs) == 1:
        data.headline += " " + final_notes[0]
    data.hv_sentence = hv_sentence(data, runs)
    data.front_note = front_size_note(per_run, len(pareto), len(left), len(runs))
    data.sampler_note = sampler_note(per_sampler)
    data.method_text = (
        "Ranks come from non-dominated sorting over all objectives with their directions; only "
        "complete trials with every objective measured are ranked (NaN is missing, never a "
        "value). The knee is, in the front's own normalized space, the point farthest from the "
        "line through the two extreme points (two objectives), or the point closest to the "
        "ideal point (three or more). Hypervolume bounds (objective units), fixed before each "
        "run's first trial:"
    )
    figure_paths: list[Path] = []
    if figures:
        data.figures = draw_figures(data, out / "figures")
        figure_paths = [p for p, _ in data.figures.values()]
    html_path, md_path = out / "index.html", out / "report.md"
    html_path.write_text(render_html(data), encoding="utf-8")
    md_path.write_text(render_markdown(data), encoding="utf-8")
    csv_cols = [
        c
        for c in [
            "arch_id",
            "run_label",
            "trial",
            "rank",
            "knee",
            *metrics,
            "latency_ms_search",
            "spec_short",
            "fingerprint_id",
            "profile_cmd",
            "rebuild_cmd",
            "hv_contribution",
            "spec",
        ]
        if c in pareto
    ]
    csv_path = out / "pareto.csv"
    whole = _whole_numbers(pareto[csv_cols], ("trial", "rank", "params", "macs"))
    whole.to_csv(csv_path, index=False)
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(_summary(data), indent=2, default=_json_default) + "\n")
    return ReportPaths(
        out_dir=out,
        html=html_path,
        markdown=md_path,
        pareto_csv=csv_path,
        summary_json=summary_path,
        specs_dir=specs_dir,
        figures=tuple(figure_paths),
        warnings=tuple(w for r in runs for w in r.warnings),
    )


def _whole_numbers(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` with the given columns as nullable integers where every value is whole (trial
    numbers are typed float on loading, and a CSV would write ``2.0``)."""
    out = df.copy()
    for col in columns:
        if col not in out:
            continue
        values = pd.to_numeric(out[col], errors="coerce")
        known = values.dropna()
        if len(known) and np.isfinite(known).all() and (known == np.round(known)).all():
            out[col] = values.round().astype("Int64")
    return out


def _subtitle(runs: list[RunData], objectives: Sequence[Objective]) -> str:
    common, each = subtitle_training(runs)  # what accuracy was measured on
    described = ", ".join(
        f"{r.label} ({r.sampler}"
        + (f", seed {r.seed}" if r.seed is not None else "")
        + (f"; {each[r.label]}" if each.get(r.label) else "")
        + ")"
        for r in runs
    )
    objs = ", ".join(f"{o.direction} {o.name}" for o in objectives)
    trained = f" · data: {common}" if common else ""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Runs: {described}{trained} · objectives: {objs} · device {runs[0].device} · "
        f"generated {when}"
    )


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _summary(data: ReportData) -> dict[str, object]:
    def clean(df: pd.DataFrame) -> list[dict[str, object]]:
        return json.loads(df.to_json(orient="records"))

    return {
        "title": data.title,
        "runs": [
            {
                "label": r.label,
                "path": os.fspath(r.path),
                "sampler": r.sampler,
                "seed": r.seed,
                "fingerprint_id": r.fingerprint_id,
                "trained_on": training_text(r),
            }
            for r in data.runs
        ],
        "objectives": [{"name": o.name, "direction": o.direction} for o in data.objectives],
        "hypervolume_definition": data.hv.to_dict(),
        "run_hypervolume_definitions": {
            r.label: r.hypervolume.id for r in data.runs if r.hypervolume is not None
        },
        "combined_hypervolume": None if np.isnan(data.combined_hv) else data.combined_hv,
        "hypervolume_per_run": clean(data.per_run),
        "hypervolume_per_sampler": clean(data.per_sampler),
        "front_size_note": data.front_note,
        "sampler_note": data.sampler_note,
        "status_counts": clean(data.counts),
        "pareto_arch_ids": data.pareto["arch_id"].astype(str).tolist(),
        "picks": {k: str(v["arch_id"]) for k, v in data.picks.items()},
        "notes": data.notes,
        "fingerprints": data.fingerprints,
        "final_remeasurement": {
            r.label: {
                k: r.final.get(k) for k in ("runtime", "rounds", "kendall_tau", "kendall_pairs")
            }
            for r in data.runs
            if r.final
        },
    }
