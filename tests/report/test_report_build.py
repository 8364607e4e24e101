"""A report built from a stored tiny run, through the CLI and through ``build_report``."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fcasearch.report import build_report
from fcasearch.report.html import format_value

REPO = Path(__file__).resolve().parents[2]


def brute_front(trials: pd.DataFrame) -> set[str]:
    """arch_ids of complete trials no other complete trial dominates (max accuracy, min MACs)."""
    ok = trials[
        (trials["status"] == "complete") & trials["accuracy"].notna() & trials["macs"].notna()
    ]
    front = set()
    for _, a in ok.iterrows():
        beaten = any(
            b["accuracy"] >= a["accuracy"]
            and b["macs"] <= a["macs"]
            and (b["accuracy"] > a["accuracy"] or b["macs"] < a["macs"])
            for _, b in ok.iterrows()
        )
        if not beaten:
            front.add(a["arch_id"])
    return front


def test_report_from_stored_run(make_run, report_cli, capsys):
    run = make_run("tiny")
    assert report_cli(["report", str(run)]) == 0
    printed = capsys.readouterr().out
    out = run / "report"
    html = (out / "index.html").read_text()
    assert str(out / "index.html") in printed and str(out / "report.md") in printed

    # self-contained: figures embedded, nothing fetched from elsewhere
    assert html.count("data:image/png;base64,") >= 4
    assert 'src="http' not in html and "<link" not in html and "<script" not in html
    # failed and infeasible trials are counted and their reasons named
    trials = pd.read_parquet(run / "trials.parquet")
    for reason in ("oom", "diverged", "RuntimeError: shape mismatch in stage 3"):
        assert reason in html
    assert "Traceback" not in html  # first line of an exception only
    assert "infeasible: 3" in html and "failed: 3" in html and "pruned: 2" in html
    assert "constraint: macs" in html and "(and 2 similar)" in html
    assert "missing objective" in html

    md = (out / "report.md").read_text()
    # an older run (no definition in run.yaml): derived, and said so
    assert "accuracy from 1 (best) to 0 (accuracy is a fraction in [0, 1])" in md
    assert "derived when reporting" in md
    assert "| accuracy | maximize | 1 | 0 |" in md  # the bounds are recorded
    assert "](figures/accuracy_vs_macs.png)" in md

    pareto = pd.read_csv(out / "pareto.csv")
    assert set(pareto["arch_id"]) == brute_front(trials)
    assert len(pareto) == len(brute_front(trials))
    assert pareto["macs"].is_monotonic_increasing and pareto["knee"].sum() == 1
    for _, row in pareto.iterrows():
        spec_file = out / "specs" / f"{row['arch_id']}.json"
        assert json.loads(spec_file.read_text()) == json.loads(row["spec"])
        assert row["profile_cmd"].startswith("fcasearch profile ") and row["profile_cmd"].endswith(
            "--device cpu"
        )
        assert row["rebuild_cmd"].endswith(f"{row['arch_id']}.json")

    summary = json.loads((out / "summary.json").read_text())
    bounds = {
        b["name"]: (b["best"], b["reference"])
        for b in summary["hypervolume_definition"]["objectives"]
    }
    # the run's space did not load (a stub): MACs take the worst value any trial recorded
    assert bounds == {"accuracy": (1.0, 0.0), "macs": (0.0, float(trials["macs"].max()))}
    assert 0 < summary["combined_hypervolume"] <= 1
    assert pareto["hv_contribution"].ge(0).all() and pareto["hv_contribution"].gt(0).any()
    counts = summary["status_counts"][0]
    assert (counts["complete"], counts["failed"], counts["infeasible"], counts["pruned"]) == (
        16,
        3,
        3,
        2,
    )
    assert counts["missing_objective"] == 1


def test_csv_only_run_custom_reference_and_out(make_run, tmp_path):
    run = make_run("csvrun", csv_only=True, seed=3)
    paths = build_report(
        [run], tmp_path / "elsewhere", hv_reference=["macs=5e6"], figures=False, device="cuda"
    )
    assert paths.out_dir == tmp_path / "elsewhere" and not (run / "report").exists()
    md = paths.markdown.read_text()
    assert "macs from 0 (best) to 5e+06 (the report's --hv-reference macs=5e+06)" in md
    assert "--device cuda" in md
    assert paths.figures == () and "data:image/png" not in paths.html.read_text()
    with pytest.raises(ValueError, match="latency_ms is not an objective"):
        build_report([run], tmp_path / "x", hv_reference=["latency_ms=5"], figures=False)
    with pytest.raises(ValueError, match="must lie above the best value"):
        build_report([run], tmp_path / "x", hv_reference={"macs": -1}, figures=False)


def test_run_with_no_complete_trial_still_reports(make_run, report_cli):
    run = make_run("allbad", n=6, statuses={"failed": 4, "infeasible": 2})
    assert report_cli(["report", str(run), "--no-figures"]) == 0
    html = (run / "report" / "index.html").read_text()
    assert "no front yet" in html and "failed: 4" in html and "infeasible: 2" in html
    assert len(pd.read_csv(run / "report" / "pareto.csv")) == 0


def test_three_objectives_and_nan_metric_are_not_values(make_run, tmp_path):
    objectives = [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "params", "direction": "minimize"},
        {"name": "latency_ms", "direction": "minimize"},
    ]
    run = make_run("three", objectives=objectives)
    trials = pd.read_parquet(run / "trials.parquet")
    # a complete trial with an unmeasured latency must not be ranked, whatever its accuracy
    idx = trials.index[(trials["status"] == "complete") & trials["accuracy"].notna()][0]
    trials.loc[idx, ["latency_ms", "accuracy"]] = [np.nan, 0.99]
    trials.to_parquet(run / "trials.parquet")
    paths = build_report(run, figures=False)
    pareto = pd.read_csv(paths.pareto_csv)
    assert trials.loc[idx, "arch_id"] not in set(pareto["arch_id"])
    assert pareto[["accuracy", "params", "latency_ms"]].notna().all().all()
    summary = json.loads(paths.summary_json.read_text())
    assert len(summary["hypervolume_definition"]["objectives"]) == 3
    assert summary["status_counts"][0]["missing_objective"] == 2


def test_missing_directory_is_a_clear_cli_error(tmp_path, report_cli, capsys):
    assert report_cli(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "run.yaml").write_text(yaml.safe_dump({"name": "e"}))
    assert report_cli(["report", str(tmp_path / "empty")]) == 2
    assert "objectives" in capsys.readouterr().err


def test_a_file_given_as_the_run_is_not_a_directory(tmp_path, report_cli, capsys):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    assert report_cli(["report", str(onnx)]) == 2
    err = capsys.readouterr().err
    assert f"{onnx} is not a directory" in err and "does not exist" not in err
    assert report_cli(["report", "z" * 300]) == 2  # no path at all: no traceback either
    assert "does not exist" in capsys.readouterr().err


def test_report_script_runs_the_cli(make_run, report_cli, monkeypatch, capsys):
    run = make_run("script")
    monkeypatch.setattr(sys, "argv", ["report.py", str(run), "--no-figures"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "report.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert "index.html" in capsys.readouterr().out


def test_importing_the_package_does_not_load_plotting():
    code = (
        "import sys, fcasearch, fcasearch.report, fcasearch.commands.report; "
        "bad = [m for m in ('seaborn', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_cell_formats():
    assert format_value("accuracy", 0.8031) == "80.31%"
    assert format_value("macs", 1_374_297_280) == "1.37 G"
    assert format_value("params", 6_187_560.0) == "6.19 M"
    assert format_value("latency_ms", 1.2345) == "1.23 ms"
    assert format_value("latency_ms", float("nan")) == "—"
    assert format_value("trial", 12.0) == "12"


def test_pareto_csv_writes_trial_numbers_as_integers(make_run, tmp_path):
    run = make_run("ints")
    paths = build_report(run, tmp_path / "r", figures=False)
    raw = pd.read_csv(paths.pareto_csv, dtype=str)
    assert len(raw) and raw["trial"].str.fullmatch(r"\d+").all(), raw["trial"].tolist()
    assert raw["macs"].str.fullmatch(r"\d+").all() and raw["params"].str.fullmatch(r"\d+").all()


def test_budget_rows_close_in_cost_read_differently(make_run, tmp_path):
    # two budget rows of 283,792 and 284,432 MACs both read "284 k" at three digits
    run = make_run("close", statuses={})
    trials = pd.read_parquet(run / "trials.parquet")
    trials["accuracy"] = 0.1
    trials["macs"] = 400_000 + trials["trial"] * 1000
    trials.loc[0, ["macs", "accuracy"]] = [283_792, 0.5]
    trials.loc[1, ["macs", "accuracy"]] = [284_432, 0.6]
    trials.to_parquet(run / "trials.parquet", index=False)
    paths = build_report(run, tmp_path / "r", figures=False)
    budget = paths.markdown.read_text().split("budget of macs")[1].split("## Runs")[0]
    assert "| 283.8 k |" in budget and "| 284.4 k |" in budget, budget
    html = paths.html.read_text().split("budget of")[1].split("Runs and trials")[0]
    assert ">283.8 k<" in html and ">284.4 k<" in html


def test_the_headline_says_what_one_validation_image_is_worth(make_run, tmp_path):
    """Picks one image apart (94.99% against 94.71% on 359 images) read as a ranking."""
    run = make_run("res")
    plain = build_report(run, tmp_path / "plain", figures=False).markdown.read_text()
    assert "validation images" not in plain  # a run that records no data: nothing claimed
    config = yaml.safe_load((run / "run.yaml").read_text())
    config["data"] = {"name": "digits", "classes": 10, "train_images": 1438, "val_images": 359}
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    text = build_report(run, tmp_path / "data", figures=False).markdown.read_text()
    assert "Accuracy is a count of 359 validation images: one image is 0.28 points" in text
