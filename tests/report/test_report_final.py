"""The report's latency: final re-measurement figures with the Kendall tau, the run's own
reference models, and never two runtimes (or one at two settings) on one axis."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from fcasearch.report import MixedRuntimeError, build_report

LATENCY = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "latency_ms", "direction": "minimize"},
]


def _on_runtime(run, runtime: str, rows=None):
    """Mark a stored run (or some of its rows) as measured on ``runtime``."""
    config = yaml.safe_load((run / "run.yaml").read_text())
    if rows is None:
        config["runtime"] = runtime
        (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    trials = pd.read_parquet(run / "trials.parquet")
    if "runtime" not in trials:
        trials["runtime"] = config.get("runtime", runtime)
    trials.loc[trials.index[rows] if rows is not None else trials.index, "runtime"] = runtime
    trials.to_parquet(run / "trials.parquet", index=False)
    return run


def test_runs_on_different_runtimes_are_refused(make_run, report_cli, capsys, tmp_path):
    a = _on_runtime(make_run("eager-run", objectives=LATENCY), "eager")
    b = _on_runtime(make_run("ort-run", objectives=LATENCY, seed=1), "onnxruntime")
    with pytest.raises(MixedRuntimeError) as err:
        build_report([a, b], figures=False)
    message = str(err.value)
    for needle in ("eager", "onnxruntime", "eager-run", "ort-run", "latency_ms", "--runtime"):
        assert needle in message
    assert "--allow-mixed-runtimes" in message and isinstance(err.value, ValueError)
    assert report_cli(["report", str(a), str(b), "--no-figures"]) == 2
    assert "mix 2 runtimes" in capsys.readouterr().err
    out = tmp_path / "mixed"
    args = ["report", str(a), str(b), "--no-figures", "--allow-mixed-runtimes", "--out", str(out)]
    assert report_cli(args) == 0
    assert "Mixed runtimes allowed" in (out / "index.html").read_text()


def test_rows_of_one_run_on_two_runtimes_are_refused(make_run):
    run = _on_runtime(make_run("one", objectives=LATENCY), "eager")
    _on_runtime(run, "compile", rows=slice(0, 3))
    with pytest.raises(MixedRuntimeError, match="compile"):
        build_report(run, figures=False)


def test_the_same_runtime_with_other_options_is_another_runtime(make_run):
    a = _on_runtime(make_run("default", objectives=LATENCY), "eager")
    b = _on_runtime(make_run("sgemm", objectives=LATENCY, seed=1), "eager")
    config = yaml.safe_load((b / "run.yaml").read_text())
    config["runtime_options"] = "pointwise_conv=False"
    (b / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    build_report(b, figures=False)  # one run: its rows and run.yaml agree
    with pytest.raises(MixedRuntimeError, match=r"eager \(pointwise_conv=False\) \(sgemm\)"):
        build_report([a, b], figures=False)


def _measured_at(run, threads: int, batch: int = 1, dtype: str = "fp32"):
    """Record the settings a stored run's latency was measured at, as a search does."""
    config = yaml.safe_load((run / "run.yaml").read_text())
    config.setdefault("options", {}).update(latency_batch_size=batch, latency_dtype=dtype)
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    trials = pd.read_parquet(run / "trials.parquet")
    trials["threads"] = threads
    trials.to_parquet(run / "trials.parquet", index=False)
    return run


def test_the_same_runtime_at_other_settings_is_another_runtime(make_run):
    # latency at 1 and at 2 threads, or at batch 1 and 8, is not one axis either
    two = _measured_at(_on_runtime(make_run("two", objectives=LATENCY), "eager"), 2)
    same = _measured_at(_on_runtime(make_run("same", objectives=LATENCY, seed=1), "eager"), 2)
    build_report([two, same], figures=False)  # the same settings: one axis
    one = _measured_at(_on_runtime(make_run("one", objectives=LATENCY, seed=2), "eager"), 1)
    with pytest.raises(MixedRuntimeError) as err:
        build_report([two, one], figures=False)
    assert "eager at batch 1, fp32, 2 threads (two)" in str(err.value)
    assert "eager at batch 1, fp32, 1 thread (one)" in str(err.value)
    b8 = _measured_at(_on_runtime(make_run("b8", objectives=LATENCY, seed=3), "eager"), 2, 8)
    with pytest.raises(MixedRuntimeError, match=r"batch 8, fp32, 2 threads \(b8\)"):
        build_report([two, b8], figures=False)


def test_runtime_free_objectives_only_note_it(make_run):
    a = _on_runtime(make_run("a"), "eager")
    b = _on_runtime(make_run("b", seed=1), "onnxruntime")
    paths = build_report([a, b], figures=False)
    notes = json.loads(paths.summary_json.read_text())["notes"]
    assert any("2 runtimes" in n for n in notes)


# one profile CSV row: ConvNeXt-T on eager at batch 1, fp32, on the runs' hardware
PROFILE_ROW = {
    "model": "convnext_tiny",
    "batch_size": 1,
    "dtype": "fp32",
    "latency_ms": 3.0,
    "peak_mem_mb": 40.0,
    "params": 2.8e7,
    "macs": 9.1e7,
    "fingerprint_id": "3f9a0c1d2e4b",
    "runtime": "eager",
}


def _profile_notes(run, profile, rows) -> list[str]:
    """The report's notes for ``run`` given a profile CSV of ``rows``."""
    pd.DataFrame(rows).to_csv(profile, index=False)
    paths = build_report(run, profile=profile, figures=False)
    return json.loads(paths.summary_json.read_text())["notes"]


def test_profile_rows_at_other_settings_give_no_marker(make_run, tmp_path):
    run = _measured_at(_on_runtime(make_run("prof"), "eager"), threads=2, batch=1)
    profile = tmp_path / "profile.csv"
    row = {**PROFILE_ROW, "batch_size": 8, "dtype": "float32", "threads": 2, "latency_ms": 30.0}

    def marker(rows):
        omitted = [n for n in _profile_notes(run, profile, rows) if "convnext_tiny omitted" in n]
        return omitted[0] if omitted else None

    # only batch 8 profiled: not the runs' batch 1, so no marker (it was taken before)
    note = marker([row])
    assert note and "profiled at batch 8, fp32, 2 threads" in note
    assert "the runs measured at batch 1, fp32, 2 threads" in note
    assert "at batch 1, fp32, 1 thread" in marker([{**row, "batch_size": 1, "threads": 1}])
    assert marker([row, {**row, "batch_size": 1}]) is None  # the runs' settings: a marker


def _write_final(run, factor: float):
    """A final.json re-measuring every complete trial: final = in-search latency x ``factor``
    plus a reversal of the two fastest, and one reference model."""
    trials = pd.read_parquet(run / "trials.parquet")
    done = trials[(trials["status"] == "complete") & trials["latency_ms"].notna()]
    done = done.sort_values("latency_ms")
    models = []
    for i, (_, row) in enumerate(done.iterrows()):
        final = row["latency_ms"] * factor
        if i == 0:
            final = done["latency_ms"].iloc[1] * factor * 1.01  # the fastest two swap places
        models.append(
            {
                "name": f"trial {int(row['trial'])}",
                "kind": "candidate",
                "trial": int(row["trial"]),
                "arch_id": row["arch_id"],
                "search_latency_ms": float(row["latency_ms"]),
                "status": "ok",
                "final_latency_ms": float(final),
                "final_latency_p90_ms": float(final) * 1.05,
                "final_latency_cv": 0.02,
                "final_latency_stable": True,
                "attempts": 1,
            }
        )
    models.append(
        {
            "name": "convnext_tiny",
            "kind": "reference",
            "model": "convnext_tiny",
            "search_latency_ms": 21.0,
            "status": "ok",
            "final_latency_ms": 20.0,
            "final_latency_cv": 0.01,
            "final_latency_stable": True,
        }
    )
    doc = {
        "runtime": "eager",
        "rounds": 10,
        "kendall_tau": 0.93,
        "kendall_pairs": len(models),
        "models": models,
    }
    (run / "final.json").write_text(json.dumps(doc))
    pd.DataFrame(
        [
            {
                "model": "convnext_tiny",
                "runtime": "eager",
                "status": "ok",
                "params": 2.8e7,
                "macs": 9.1e7,
                "latency_ms": 21.0,
                "peak_mem_mb": 120.0,
            }
        ]
    ).to_csv(run / "references.csv", index=False)
    return done, models


def test_the_report_uses_the_final_figures_and_says_how_the_ranking_moved(make_run, tmp_path):
    run = _on_runtime(make_run("fin", objectives=LATENCY), "eager")
    _, models = _write_final(run, factor=3.0)
    out = tmp_path / "report"
    paths = build_report(run, out, figures=False)
    pareto = pd.read_csv(paths.pareto_csv)
    finals = {m["trial"]: m["final_latency_ms"] for m in models if m["kind"] == "candidate"}
    assert len(pareto) >= 1
    searched = {m["trial"]: m["search_latency_ms"] for m in models if m["kind"] == "candidate"}
    for _, row in pareto.iterrows():
        assert row["latency_ms"] == pytest.approx(finals[int(row["trial"])])
        assert row["latency_ms_search"] == pytest.approx(searched[int(row["trial"])])
    summary = json.loads(paths.summary_json.read_text())
    assert summary["final_remeasurement"]["fin"]["kendall_tau"] == 0.93
    html = (out / "index.html").read_text()
    assert "Kendall τ between in-search and final latencies 0.93" in html
    assert "10 interleaved rounds on eager" in html
    # the run's own reference model is a marker at its final latency, no --profile needed
    assert "were measured with the run" in " ".join(summary["notes"])
    # and stays so beside a --profile CSV, whose row of the same model is left out with a word
    notes = " ".join(_profile_notes(run, tmp_path / "profile.csv", [PROFILE_ROW]))
    assert "were measured with the run" in notes
    assert "--profile rows of convnext_tiny not used: the run measured these models" in notes


def test_final_figures_move_the_front(make_run, tmp_path):
    # the fastest trial re-measured slower than all others drops off the latency end of the front:
    # another member dominates it under the final figures
    run = _on_runtime(make_run("moved", objectives=LATENCY), "eager")
    trials = pd.read_parquet(run / "trials.parquet")
    done = trials[(trials["status"] == "complete") & trials["accuracy"].notna()]
    fastest = done.sort_values("latency_ms").iloc[0]
    before = build_report(run, tmp_path / "before", figures=False)
    assert int(fastest["trial"]) in set(pd.read_csv(before.pareto_csv)["trial"])
    doc = {
        "runtime": "eager",
        "rounds": 5,
        "kendall_tau": -0.1,
        "kendall_pairs": 2,
        "models": [
            {
                "name": "slow now",
                "kind": "candidate",
                "trial": int(fastest["trial"]),
                "status": "ok",
                "final_latency_ms": float(done["latency_ms"].max() * 10),
                "final_latency_stable": True,
            }
        ],
    }
    (run / "final.json").write_text(json.dumps(doc))
    after = build_report(run, tmp_path / "after", figures=False)
    assert int(fastest["trial"]) not in set(pd.read_csv(after.pareto_csv)["trial"])
    notes = " ".join(json.loads(after.summary_json.read_text())["notes"])
    assert f"moved trial {int(fastest['trial'])}) left it" in notes


def test_final_figures_never_bring_dominated_trials_onto_the_front(make_run, tmp_path):
    # every Pareto member re-measured 3x slower (final rounds beside large reference models):
    # trials the search dominated must not join the front on their in-search figures
    run = _on_runtime(make_run("slower", objectives=LATENCY), "eager")
    before = build_report(run, tmp_path / "before", figures=False)
    front = pd.read_csv(before.pareto_csv)
    trials = pd.read_parquet(run / "trials.parquet").set_index("trial")
    models = [
        {
            "name": f"t{int(t)}",
            "kind": "candidate",
            "trial": int(t),
            "status": "ok",
            "final_latency_ms": float(trials.at[t, "latency_ms"]) * 3,
            "final_latency_stable": True,
        }
        for t in front["trial"]
    ]
    doc = {"runtime": "eager", "rounds": 5, "kendall_tau": 1.0, "kendall_pairs": len(models)}
    (run / "final.json").write_text(json.dumps({**doc, "models": models}))
    after = build_report(run, tmp_path / "after", figures=False)
    shown = pd.read_csv(after.pareto_csv)
    assert sorted(shown["trial"]) == sorted(front["trial"])
    assert shown["latency_ms"].to_numpy() == pytest.approx(shown["latency_ms_search"] * 3)
    # the hypervolumes stay the search's: the same figures for every trial
    summaries = [json.loads(p.summary_json.read_text()) for p in (before, after)]
    hv = [s["hypervolume_per_run"][0]["hypervolume"] for s in summaries]
    assert hv[1] == pytest.approx(hv[0]) and hv[0] > 0
    combined = [s["combined_hypervolume"] for s in summaries]
    assert combined[1] == pytest.approx(combined[0])
    # the budget rows and the figure's points stay on the in-search figures too; the figure shows
    # the final ones beside the Pareto set
    drawn = build_report(run, tmp_path / "drawn")
    text = drawn.markdown.read_text()
    assert "is the in-search figure every trial has" in text
    assert "open dots: the Pareto set's final re-measurement" in text


def test_profile_rows_of_another_runtime_give_no_marker(make_run, tmp_path):
    run = _on_runtime(make_run("prof"), "onnxruntime")
    profile = tmp_path / "profile.csv"
    notes = _profile_notes(run, profile, [PROFILE_ROW])
    assert any("convnext_tiny omitted" in n and "runtime" in n for n in notes)
    notes = _profile_notes(run, profile, [{**PROFILE_ROW, "runtime": "onnxruntime"}])
    assert not any("convnext_tiny omitted" in n for n in notes)
    # the run's runtime, but with options the run did not use (--runtime-option)
    other = {**PROFILE_ROW, "runtime": "onnxruntime", "runtime_options": "exporter=dynamo"}
    notes = _profile_notes(run, profile, [other])
    omitted = "profiled on runtime(s) onnxruntime (exporter=dynamo), the runs on onnxruntime ("
    assert any("convnext_tiny omitted" in n and omitted in n for n in notes), notes
    # a run with those options takes the row
    config = yaml.safe_load((run / "run.yaml").read_text())
    config["runtime_options"] = "exporter=dynamo"
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    notes = _profile_notes(run, profile, [other])
    assert not any("convnext_tiny omitted" in n for n in notes)


def test_the_budget_table_says_its_latency_column_is_in_search_whatever_the_cost(
    make_run, tmp_path
):
    """With macs as the budget's cost, its latency_ms column (in-search figures) went without the
    note, beside the Pareto table's final figures under the same header."""
    objectives = [*LATENCY[:1], {"name": "macs", "direction": "minimize"}, LATENCY[1]]
    run = _on_runtime(make_run("macs", objectives=objectives), "eager")
    front = pd.read_csv(build_report(run, tmp_path / "before", figures=False).pareto_csv)
    trials = pd.read_parquet(run / "trials.parquet").set_index("trial")
    models = [
        {"name": f"t{int(t)}", "kind": "candidate", "trial": int(t), "status": "ok",
         "final_latency_ms": float(trials.at[t, "latency_ms"]) * 1.5, "final_latency_stable": True}
        for t in front["trial"]
    ]  # fmt: skip
    doc = {"runtime": "eager", "rounds": 5, "kendall_tau": 1.0, "kendall_pairs": len(models)}
    (run / "final.json").write_text(json.dumps({**doc, "models": models}))
    report = build_report(run, tmp_path / "after", figures=False)
    text = report.markdown.read_text()
    assert "budget of macs" in text.lower(), text
    assert "Its latency_ms is the in-search figure every trial has" in text


def test_several_runs_final_figures_are_said_to_come_from_separate_sessions(make_run, tmp_path):
    a = _on_runtime(make_run("a", objectives=LATENCY), "eager")
    b = _on_runtime(make_run("b", objectives=LATENCY, seed=1), "eager")
    _write_final(a, factor=1.0)
    _write_final(b, factor=1.0)
    doc = json.loads((b / "final.json").read_text())
    ref = next(m for m in doc["models"] if m["kind"] == "reference")
    ref["final_latency_ms"] = 25.0  # a's final rounds measured it at 20 ms
    (b / "final.json").write_text(json.dumps(doc))
    paths = build_report([a, b], tmp_path / "ab", figures=False)
    notes = json.loads(paths.summary_json.read_text())["notes"]
    note = next(n for n in notes if "own final session" in n)
    assert "across runs they were not" in note
    assert "convnext_tiny: 25 ms in b, 20 ms in a" in note
    assert "The reference markers measured with a run are run a's" in note
    assert "were measured with run a" in " ".join(notes)
    assert "own final session" in paths.markdown.read_text()
    # one run alone: its final rounds are one session, nothing to say
    alone = build_report(a, tmp_path / "a", figures=False)
    assert "own final session" not in alone.summary_json.read_text()


@pytest.mark.parametrize("written", ["empty", "failed"])
def test_no_run_is_named_for_the_markers_when_its_references_give_none(make_run, tmp_path, written):
    a = _on_runtime(make_run("a", objectives=LATENCY), "eager")
    b = _on_runtime(make_run("b", objectives=LATENCY, seed=1), "eager")
    _write_final(a, factor=1.0)
    _write_final(b, factor=1.0)
    doc = json.loads((a / "final.json").read_text())
    doc["models"] = [m for m in doc["models"] if m["kind"] != "reference"]  # none measured
    (a / "final.json").write_text(json.dumps(doc))
    if written == "empty":
        (a / "references.csv").write_text("")
    else:  # the runtime could run none of them
        row = {"model": "convnext_tiny", "runtime": "eager", "status": "unsupported"}
        pd.DataFrame([{**row, "reason": "no kernel"}]).to_csv(a / "references.csv", index=False)
    paths = build_report([a, b], tmp_path / "ab", figures=False)
    notes = json.loads(paths.summary_json.read_text())["notes"]
    note = next(n for n in notes if "own final session" in n)
    assert "reference markers measured with a run" not in note
    assert "run a's" not in note
    assert "were measured with run a" not in " ".join(notes)


def test_the_front_size_column_says_it_counts_the_in_search_front(make_run, tmp_path):
    # the fastest member re-measured slower than all others leaves the Pareto set, while the
    # hypervolume (and its front size) stays on the in-search figures
    run = _on_runtime(make_run("moved", objectives=LATENCY), "eager")
    trials = pd.read_parquet(run / "trials.parquet")
    done = trials[(trials["status"] == "complete") & trials["accuracy"].notna()]
    fastest = done.sort_values("latency_ms").iloc[0]
    model = {"name": "slow now", "kind": "candidate", "trial": int(fastest["trial"]),
             "status": "ok", "final_latency_ms": float(done["latency_ms"].max() * 10),
             "final_latency_stable": True}  # fmt: skip
    doc = {"runtime": "eager", "rounds": 5, "kendall_tau": -0.1, "kendall_pairs": 2}
    (run / "final.json").write_text(json.dumps({**doc, "models": [model]}))
    paths = build_report(run, tmp_path / "r", figures=False)
    summary = json.loads(paths.summary_json.read_text())
    n_pareto = len(pd.read_csv(paths.pareto_csv))
    (row,) = summary["hypervolume_per_run"]
    assert "front_size" not in row and row["front_size_in_search"] == n_pareto + 1
    sentence = f"The Pareto set ({n_pareto} trials) is that front, less 1 member(s)"
    assert sentence in summary["front_size_note"]
    for text in (paths.markdown.read_text(), paths.html.read_text()):
        assert "front_size_in_search" in text and sentence in text
