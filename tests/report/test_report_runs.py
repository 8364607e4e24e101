"""Several runs at once: hardware fingerprints, sampler aggregation, histories, references."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fcasearch.report import (
    MixedHardwareError,
    build_report,
    combine_runs,
    fit_normalization,
    hv_history,
    hypervolume,
    load_runs,
    rank_trials,
)
from fcasearch.report.analysis import hv_summary, sampler_summary
from fcasearch.report.references import merge_references, profile_references

LATENCY = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "latency_ms", "direction": "minimize"},
]


def test_mixed_fingerprints_are_refused_with_their_names(make_run, report_cli, capsys, tmp_path):
    a = make_run("cpu-run", objectives=LATENCY, fingerprint_id="3f9a0c1d2e4b")
    b = make_run("gpu-run", objectives=LATENCY, fingerprint_id="77aa11bb22cc", seed=1)
    with pytest.raises(MixedHardwareError) as err:
        build_report([a, b], figures=False)
    message = str(err.value)
    for needle in (
        "3f9a0c1d2e4b",
        "77aa11bb22cc",
        "AMD EPYC 7B13",
        "NVIDIA H100 80GB HBM3",
        "--allow-mixed-hardware",
        "latency_ms",
    ):
        assert needle in message
    assert isinstance(err.value, ValueError) and set(err.value.fingerprints) == {
        "3f9a0c1d2e4b",
        "77aa11bb22cc",
    }

    assert report_cli(["report", str(a), str(b), "--no-figures"]) == 2
    stderr = capsys.readouterr().err
    assert "3f9a0c1d2e4b" in stderr and "77aa11bb22cc" in stderr

    out = tmp_path / "mixed-report"
    assert report_cli(["report", str(a), str(b), "--allow-mixed-hardware", "--out", str(out)]) == 0
    html = (out / "index.html").read_text()
    assert "Mixed hardware allowed" in html and "data:image/png;base64," in html
    assert not (a / "report").exists()


def test_mixed_trial_fingerprints_within_one_run_are_refused(make_run):
    run = make_run("one", objectives=LATENCY)
    trials = pd.read_parquet(run / "trials.parquet")
    trials.loc[trials.index[:5], "fingerprint_id"] = "77aa11bb22cc"
    trials.to_parquet(run / "trials.parquet")
    with pytest.raises(MixedHardwareError, match="77aa11bb22cc"):
        build_report(run, figures=False)


def test_hardware_free_objectives_never_need_one_machine(make_run):
    a = make_run("a", fingerprint_id="3f9a0c1d2e4b")
    b = make_run("b", fingerprint_id="77aa11bb22cc", seed=1)
    paths = build_report([a, b], figures=False)
    summary = json.loads(paths.summary_json.read_text())
    assert any("2 hardware fingerprints" in n for n in summary["notes"])


def test_samplers_across_seeds(make_run):
    runs = [
        make_run("nsga2-s0", seed=0),
        make_run("nsga2-s1", seed=1),
        make_run("random-s0", sampler="random", seed=2),
    ]
    paths = build_report(runs)
    summary = json.loads(paths.summary_json.read_text())
    per_sampler = {r["sampler"]: r for r in summary["hypervolume_per_sampler"]}
    per_run = {r["run_label"]: r["hypervolume"] for r in summary["hypervolume_per_run"]}
    nsga = [per_run["nsga2-s0"], per_run["nsga2-s1"]]
    assert per_sampler["nsga2"]["runs"] == 2 and per_sampler["random"]["runs"] == 1
    assert per_sampler["nsga2"]["hv_mean"] == pytest.approx(np.mean(nsga))
    assert per_sampler["nsga2"]["hv_std"] == pytest.approx(np.std(nsga, ddof=1))
    assert per_sampler["random"]["hv_std"] is None  # one run has no spread
    names = {p.name for p in paths.figures}
    assert {"hypervolume_by_sampler.png", "hypervolume_history.png", "arch_spread.png"} <= names
    assert paths.out_dir == runs[0] / "report"
    html = paths.html.read_text()
    assert "Per sampler" in html and "nsga2-s1" in html


def test_history_is_monotone_and_ends_at_the_final_hypervolume(make_run):
    runs = load_runs([make_run("h0", seed=0), make_run("h1", seed=5)])
    objectives = runs[0].objectives
    df = combine_runs(runs)
    ranked = rank_trials(df, objectives)
    norm = fit_normalization(ranked, objectives)
    # the shared normalization spans the union of both runs
    assert norm.lower[1] == ranked["macs"].min() and norm.upper[0] == ranked["accuracy"].max()
    history = hv_history(df, ranked, norm)
    final = hv_summary(df, ranked, norm).set_index("run_label")["hypervolume"]
    for (label, axis), group in history.groupby(["run_label", "axis"]):
        assert axis in ("trial", "time")
        assert (np.diff(group["hypervolume"]) >= -1e-12).all()
        assert group["hypervolume"].iloc[-1] == pytest.approx(final[label])
        assert len(group) == (df["run_label"] == label).sum()
    mine = ranked[ranked["run_label"] == "h0"]
    direct = hypervolume(norm.transform(mine[["accuracy", "macs"]].to_numpy()), norm.reference)
    assert final["h0"] == pytest.approx(direct)
    assert sampler_summary(hv_summary(df, ranked, norm))["runs"].tolist() == [2]


def test_runs_with_different_objectives_are_refused(make_run):
    a = make_run("a")
    b = make_run("b", objectives=LATENCY)
    with pytest.raises(ValueError, match="different objectives"):
        build_report([a, b], figures=False)


def test_profile_markers_only_from_the_same_hardware(make_run, tmp_path):
    run = make_run("prof")
    profile = tmp_path / "profile.csv"
    pd.DataFrame(
        [
            {
                "model": "fcaformer_l1",
                "batch_size": 1,
                "dtype": "float32",
                "latency_ms": 3.0,
                "peak_mem_mb": 40.0,
                "params": 5.8e6,
                "macs": 2.6e7,
                "fingerprint_id": "3f9a0c1d2e4b",
            },
            {
                "model": "resnet18",
                "batch_size": 1,
                "dtype": "float32",
                "latency_ms": 2.0,
                "peak_mem_mb": 30.0,
                "params": 1.1e7,
                "macs": 3.7e7,
                "fingerprint_id": "77aa11bb22cc",
            },
        ]
    ).to_csv(profile, index=False)
    paths = build_report(run, profile=profile, figures=False)
    notes = json.loads(paths.summary_json.read_text())["notes"]
    assert any("resnet18 omitted" in n and "77aa11bb22cc" in n for n in notes)
    assert not any("fcaformer_l1 omitted" in n for n in notes)


def test_profile_rows_at_another_input_size_give_no_reference(make_run, tmp_path):
    # a 224 px, 1000-class profile row has the MACs and latency of another input than the run's
    # 32 px, 10-class models: no marker, and the note says how to profile it at the runs' input
    run = make_run("prof")
    profile = tmp_path / "profile.csv"
    row = {"batch_size": 1, "dtype": "fp32", "latency_ms": 2.0, "peak_mem_mb": 30.0,
           "params": 1.1e7, "fingerprint_id": "3f9a0c1d2e4b", "runtime": "eager"}  # fmt: skip
    sizes = [("convnext_tiny", "224x224", 1000, 4.5e9), ("swin_t", "32x32", 1000, 9e7),
             ("deit_s_like", "32x32", 10, 9e7)]  # fmt: skip
    rows = [{**row, "model": m, "img_size": i, "num_classes": c, "macs": x} for m, i, c, x in sizes]
    pd.DataFrame(rows).to_csv(profile, index=False)
    paths = build_report(run, profile=profile, figures=False)
    notes = " ".join(json.loads(paths.summary_json.read_text())["notes"])
    assert "reference convnext_tiny from the profile omitted: profiled at 224x224 px" in notes
    assert "profile it with --img-size 32 --classes 10" in notes
    assert "reference swin_t from the profile omitted: profiled at 32x32 px, 1000 classes" in notes
    table, _ = profile_references(profile, ["3f9a0c1d2e4b"], 1, input_size=((32, 32), 10))
    assert list(table["model"]) == ["deit_s_like"] and table["latency_ms"].tolist() == [2.0]
    # a profile from before img_size was recorded is taken as the runs' input, with a word
    pd.DataFrame([{**row, "model": "convnext_tiny", "macs": 4.5e9}]).to_csv(profile, index=False)
    table, notes = profile_references(profile, ["3f9a0c1d2e4b"], 1, input_size=((32, 32), 10))
    assert list(table["model"]) == ["convnext_tiny"]
    assert "records no input size" in " ".join(notes)


def test_profiled_paper_model_keeps_its_counted_cost():
    paper = pd.DataFrame(
        [
            {
                "model": "fcaformer_l1",
                "kind": "paper",
                "label": "FcaFormer-L1",
                "params": 5.86e6,
                "macs": 2.67e7,
                "latency_ms": np.nan,
                "peak_mem_mb": np.nan,
            }
        ]
    )
    profiled = pd.DataFrame(
        [
            {
                "model": "fcaformer_l1",
                "kind": "paper",
                "label": "l1 (bs 1)",
                "params": 6.2e6,
                "macs": 1.37e9,
                "latency_ms": 3.0,
                "peak_mem_mb": 40.0,
            },
            {
                "model": "resnet18",
                "kind": "baseline",
                "label": "resnet18 (bs 1)",
                "params": 1.1e7,
                "macs": 1.8e9,
                "latency_ms": 2.0,
                "peak_mem_mb": 30.0,
            },
        ]
    )
    merged = merge_references(paper, profiled).set_index("model")
    assert merged.loc["fcaformer_l1", "macs"] == 2.67e7  # counted at the run's input size
    assert merged.loc["fcaformer_l1", "latency_ms"] == 3.0  # measured by the profile
    assert merged.loc["resnet18", "kind"] == "baseline" and len(merged) == 2


def test_samplers_of_one_run_each_are_said_to_have_no_spread(make_run, tmp_path):
    one_each = [make_run("n", seed=0), make_run("r", sampler="random", seed=1)]
    paths = build_report(one_each, tmp_path / "one")
    caveat = "One run per sampler, so no spread"
    assert caveat in json.loads(paths.summary_json.read_text())["sampler_note"]
    assert caveat in paths.markdown.read_text().split("### Per sampler")[1].split("##")[0]
    assert caveat in paths.html.read_text().split("Per sampler")[1].split("<h2")[0]
    # with seeds of one sampler, only the sampler of a single run is named
    seeds = [*one_each, make_run("n1", seed=2)]
    note = json.loads(build_report(seeds, tmp_path / "seeds").summary_json.read_text())
    assert note["sampler_note"].startswith("random: one run only, so no spread")
