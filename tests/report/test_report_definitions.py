"""Hypervolume definitions in reports: stored, derived, common; corrupt trials.parquet;
unstable latency; attainment surfaces of seeds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from fcasearch.pareto import HypervolumeDefinition, define_hypervolume, dominates
from fcasearch.report import build_report
from fcasearch.storage.records import RunDir, TrialLog

LATENCY = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "latency_ms", "direction": "minimize"},
]


def _store(run, max_macs: float) -> None:
    """Give ``run`` a stored definition, as a search of this version writes it."""
    config = yaml.safe_load((run / "run.yaml").read_text())
    pairs = [(o["name"], o["direction"]) for o in config["objectives"]]
    config["hypervolume"] = define_hypervolume(pairs, constraints={"max_macs": max_macs}).to_dict()
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _per_run(paths) -> dict[str, dict]:
    summary = json.loads(paths.summary_json.read_text())
    return {r["run_label"]: r for r in summary["hypervolume_per_run"]}


def test_same_definition_keeps_each_runs_value(make_run, tmp_path):
    a, b = make_run("a", seed=0), make_run("b", seed=1)
    _store(a, 5e6)
    _store(b, 5e6)
    alone = _per_run(build_report(a, tmp_path / "ra", figures=False))["a"]["hypervolume"]
    both = build_report([a, b], tmp_path / "rab", figures=False)
    assert _per_run(both)["a"]["hypervolume"] == pytest.approx(alone)
    assert "hv_own" not in _per_run(both)["a"]
    assert "the one every run compared has" in both.markdown.read_text()


def test_different_definitions_are_compared_under_a_common_one(make_run, tmp_path):
    a, b = make_run("a", seed=0), make_run("b", seed=1)
    _store(a, 5e6)
    _store(b, 15e6)
    paths = build_report([a, b], tmp_path / "r", figures=False)
    per_run = _per_run(paths)
    alone = _per_run(build_report(a, tmp_path / "ra", figures=False))["a"]["hypervolume"]
    assert per_run["a"]["hv_own"] == pytest.approx(alone)
    assert per_run["a"]["hypervolume"] != pytest.approx(alone)
    summary = json.loads(paths.summary_json.read_text())
    macs = summary["hypervolume_definition"]["objectives"][1]
    assert macs["reference"] == 15e6 and "widest" in macs["source"]
    md = paths.markdown.read_text()
    assert "a common definition" in md and "definitions differ" in md


def test_stored_definition_is_used_as_is(make_run):
    run = make_run("stored")
    _store(run, 5e6)
    paths = build_report(run, figures=False)
    md = paths.markdown.read_text()
    assert "macs from 0 (best) to 5e+06 (constraint max_macs)" in md
    assert "derived" not in md


def _journal(run) -> pd.DataFrame:
    """Write the run's trials.jsonl from its table (as a search keeps it)."""
    trials = pd.read_parquet(run / "trials.parquet")
    log = TrialLog(RunDir(run))
    for row in trials.to_dict(orient="records"):
        log.append(row)
    return trials


def test_corrupt_parquet_reports_from_the_journal(make_run, report_cli, capsys):
    run = make_run("broken")
    _journal(run)
    expected = set(pd.read_csv(build_report(run, figures=False).pareto_csv)["arch_id"])
    (run / "trials.parquet").write_bytes(b"PAR1 this is not a parquet file")
    (run / "trials.csv").unlink()
    assert report_cli(["report", str(run), "--no-figures"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trials.parquet is unreadable" in err[0] and "trials.jsonl" in err[0]
    assert set(pd.read_csv(run / "report" / "pareto.csv")["arch_id"]) == expected
    (run / "trials.jsonl").unlink()
    assert report_cli(["report", str(run), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trials.jsonl or trials.csv" in err[0]


def test_unstable_latency_is_marked(make_run, tmp_path):
    run = make_run("noisy", objectives=LATENCY)
    trials = pd.read_parquet(run / "trials.parquet")
    trials["latency_stable"] = True
    idx = trials.index[(trials["status"] == "complete") & trials["accuracy"].notna()][0]
    trials.loc[idx, ["latency_ms", "latency_stable", "accuracy"]] = [210.0, False, 0.99]
    trials.to_parquet(run / "trials.parquet")
    paths = build_report(run, tmp_path / "r")
    html = paths.html.read_text()
    assert "210 ms<span>⚠</span>" in html and "unstable: the latency stayed above" in html
    assert "210 ms ⚠ unstable" in paths.markdown.read_text()
    assert "unstable latency" in html  # the captions say how it is drawn
    # nor does it set the reference derived for this older run
    summary = json.loads(paths.summary_json.read_text())
    latency = summary["hypervolume_definition"]["objectives"][1]
    assert latency["reference"] == trials.loc[trials["latency_stable"], "latency_ms"].max() < 210


def test_seeds_of_one_configuration_get_attainment_surfaces(make_run, tmp_path):
    runs = [make_run(f"s{i}", seed=i) for i in range(3)] + [make_run("r", sampler="random")]
    paths = build_report(runs, tmp_path / "r")
    html = paths.html.read_text()
    assert "median attainment surface" in html and "25-75% band" in html
    one = build_report(runs[3], tmp_path / "one")
    assert "median attainment surface" not in one.html.read_text()


def test_a_run_without_any_reference_reports_no_hypervolume(make_run, tmp_path):
    run = make_run("nolat", objectives=[{"name": "latency_ms", "direction": "minimize"}])
    config = yaml.safe_load((run / "run.yaml").read_text())
    config["hypervolume"] = define_hypervolume([("latency_ms", "minimize")]).to_dict()
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    paths = build_report(run, tmp_path / "r", figures=False)
    summary = json.loads(paths.summary_json.read_text())
    assert summary["combined_hypervolume"] is None  # NaN in JSON
    assert "No hypervolume: no objective has a reference" in paths.markdown.read_text()


def test_report_cli_takes_hv_references(make_run, report_cli, capsys):
    run = make_run("cli", objectives=LATENCY)
    assert report_cli(["report", str(run), "--no-figures", "--hv-reference", "latency_ms=5"]) == 0
    md = (run / "report" / "report.md").read_text()
    assert "latency_ms from 0 (best) to 5 (the report's --hv-reference latency_ms=5)" in md
    assert report_cli(["report", str(run), "--no-figures", "--hv-reference", "macs=5"]) == 2
    assert "macs is not an objective" in capsys.readouterr().err


def test_hv_contribution_is_what_removing_the_member_costs(make_run, tmp_path):
    # the Pareto set is non-dominated over accuracy, macs and latency; the hypervolume counts
    # accuracy and macs only, where some members are dominated: they contribute nothing, and a
    # member's contribution is what its removal costs with them present
    objectives = [*LATENCY[:1], {"name": "macs", "direction": "minimize"}, LATENCY[1]]
    run = make_run("fewer", objectives=objectives, n=40, statuses={})
    _store(run, 5e6)  # latency_ms: no constraint, so left out of the hypervolume
    paths = build_report(run, tmp_path / "r", figures=False)
    pareto = pd.read_csv(paths.pareto_csv)
    summary = json.loads(paths.summary_json.read_text())
    definition = HypervolumeDefinition.from_dict(summary["hypervolume_definition"], source="t")
    assert definition.names == ("accuracy", "macs")
    values = pareto[["accuracy", "macs"]].to_numpy(dtype=float)
    whole = definition.value(values)
    removed = [whole - definition.value(np.delete(values, i, axis=0)) for i in range(len(values))]
    assert pareto["hv_contribution"].to_numpy() == pytest.approx(removed, abs=1e-12)
    dominated = [i for i in range(len(values)) if any(
        dominates(values[j], values[i], ["maximize", "minimize"]) for j in range(len(values))
    )]  # fmt: skip
    assert dominated and (pareto["hv_contribution"].iloc[dominated] == 0).all()


def test_an_unstable_latency_in_a_reason_is_marked(make_run, tmp_path):
    run = make_run("limits", objectives=LATENCY)
    trials = pd.read_parquet(run / "trials.parquet")
    trials["latency_stable"] = True
    rows = trials.index[trials["status"] == "infeasible"]
    for i, (latency, stable, cv) in zip(rows, [(1.209, False, 0.271), (1.43, True, 0.02)]):
        trials.loc[i, ["latency_ms", "latency_stable", "latency_cv"]] = [latency, stable, cv]
        trials.loc[i, "reason"] = f"latency_ms {latency} ms > max_latency_ms 1.2 ms"
    trials.to_parquet(run / "trials.parquet", index=False)
    paths = build_report(run, tmp_path / "r", figures=False)
    shaky = f"limits#{int(trials.loc[rows[0], 'trial'])}"
    mark = f"⚠ unstable latency: {shaky} (CV 0.271)"
    line = next(x for x in paths.markdown.read_text().splitlines() if "max_latency_ms" in x)
    assert mark in line and f"limits#{int(trials.loc[rows[1], 'trial'])}" in line
    assert mark in paths.html.read_text()
