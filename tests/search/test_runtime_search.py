"""--runtime for a search: one runtime per run, in run.yaml and every row, for candidates and
reference models alike; a model the runtime cannot run is a row that says so, never a number."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from fcasearch.cli import main

LATENCY = ("--objectives", "accuracy:max", "latency_ms:min")


def _frame(run):
    return pd.read_parquet(run / "trials.parquet")


def test_search_on_onnxruntime_measures_candidates_and_references_on_it(
    tiny_space, search_args, tmp_path, capsys
):
    out = tmp_path / "run"
    args = search_args(tiny_space, out, "--n-trials", "2", *LATENCY, "--runtime", "onnxruntime")
    args[args.index("--references") + 1] = "fcaformer_nano"  # the torchvision ones: test_final
    assert main([*args, "--final-rounds", "3"]) == 0
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["runtime"] == "onnxruntime" and run["options"]["runtime"] == "onnxruntime"
    assert run["runtime_version"].startswith("onnxruntime ")
    df = _frame(out)
    measured = df[df["latency_ms"].notna()]
    assert len(measured) >= 1
    assert set(measured["runtime"]) == {"onnxruntime"}
    assert measured["runtime_version"].str.startswith("onnxruntime ").all()
    notes = measured["notes"].map(json.loads)
    assert notes.map(lambda n: "onnxruntime" in n["measure.latency"]).all()
    # the reference model: the same runtime, the same batch size and threads as the candidates
    refs = pd.read_csv(out / "references.csv")
    assert list(refs["model"]) == ["fcaformer_nano"]
    assert refs.loc[0, "runtime"] == "onnxruntime" and refs.loc[0, "status"] == "ok"
    assert refs.loc[0, "latency_ms"] > 0
    assert refs.loc[0, "batch_size"] == 1 and refs.loc[0, "threads"] == 1
    final = json.loads((out / "final.json").read_text())
    assert final["runtime"] == "onnxruntime"
    assert {m["kind"] for m in final["models"]} == {"candidate", "reference"}
    assert "kendall_tau_pareto" in final and final["kendall_pairs"] >= 2
    assert "Kendall tau" in capsys.readouterr().out


def test_runtime_options_reach_every_measurement_and_stay_fixed(
    tiny_space, search_args, tmp_path, capsys
):
    out = tmp_path / "run"
    args = search_args(tiny_space, out, "--n-trials", "1", *LATENCY)
    args[args.index("--references") + 1] = "fcaformer_nano"
    opts = ["--runtime-option", "pointwise_conv=false"]
    assert main([*args, *opts, "--final-rounds", "2"]) == 0
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["runtime_options"] == "pointwise_conv=False"
    assert run["options"]["runtime_options"] == {"pointwise_conv": False}
    notes = json.loads(_frame(out)["notes"].iloc[0])
    assert "PyTorch eager" in notes["measure.runtime"] and "1x1" not in notes["measure.runtime"]
    refs = pd.read_csv(out / "references.csv")
    assert refs.loc[0, "status"] == "ok" and "1x1" not in refs.loc[0, "notes"]
    final = json.loads((out / "final.json").read_text())
    assert final["runtime_options"] == {"pointwise_conv": False}
    assert "prepared on eager (pointwise_conv=False)" in final["method"]
    capsys.readouterr()
    # resumed with other options (or none): refused, nothing runs
    for other in (["--runtime-option", "pointwise_conv=true"], []):
        code = main(["search", "--resume", str(out), "--n-trials", "2", *other])
        if not other:  # the stored options are kept
            assert code == 0 and len(_frame(out)) == 2
            continue
        err = capsys.readouterr().err.strip()
        assert code == 2 and "runtime_options" in err and len(err.splitlines()) == 1
        assert len(_frame(out)) == 1
    # another runtime: the one-runtime message, not a complaint about the stored options
    code = main(["search", "--resume", str(out), "--n-trials", "3", "--runtime", "onnxruntime"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "one runtime per run" in err and "pointwise_conv" not in err


def test_an_option_at_its_default_is_no_option(tiny_space, search_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, "--n-trials", "1")) == 0
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["runtime_options"] == "" and run["options"]["runtime_options"] == {}
    args = ["--n-trials", "2", "--runtime-option", "pointwise_conv=true"]
    assert main(["search", "--resume", str(out), *args]) == 0  # the same settings
    assert len(_frame(out)) == 2


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("bogus=1", "runtime 'eager' has no option(s) ['bogus']; it takes pointwise_conv"),
        ("onnxruntime.exporter=dynamo", "options for onnxruntime, but the run measures"),
        ("pointwise_conv", "give KEY=VALUE"),
    ],
)
def test_bad_runtime_options_are_one_line_errors(
    option, message, tiny_space, search_args, tmp_path, capsys
):
    out = tmp_path / "run"
    args = search_args(tiny_space, out, "--n-trials", "1", "--runtime-option", option)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_resume_refuses_another_runtime(tiny_space, search_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, "--n-trials", "1")) == 0
    capsys.readouterr()
    code = main(["search", "--resume", str(out), "--n-trials", "2", "--runtime", "onnxruntime"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "'eager'" in err and "'onnxruntime'" in err and "one runtime per run" in err
    assert len(_frame(out)) == 1  # nothing ran


def test_a_runtime_that_cannot_run_here_is_an_error_before_any_trial(
    tiny_space, search_args, tmp_path, capsys
):
    pytest.importorskip("torch")
    try:
        import torch_tensorrt  # noqa: F401

        pytest.skip("torch-tensorrt is installed here")
    except ImportError:
        pass
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, "--n-trials", "1", "--runtime", "tensorrt")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tensorrt" in err.lower()
    assert not (out / "run.yaml").exists()


def test_unknown_runtime_is_refused(tiny_space, search_args, tmp_path, capsys):
    assert main(search_args(tiny_space, tmp_path / "r", "--runtime", "tflite")) == 2
    assert "eager, compile, onnxruntime, tensorrt" in capsys.readouterr().err


def test_a_model_the_runtime_cannot_run_is_a_row_without_a_number(
    tiny_space, search_args, tmp_path
):
    # ONNX Runtime's CPU provider has no bfloat16 convolution: every export is refused
    out = tmp_path / "run"
    args = search_args(
        tiny_space, out, "--n-trials", "2", *LATENCY, "--runtime", "onnxruntime",
        "--latency-dtype", "bf16", "--final-rounds", "2",
    )  # fmt: skip
    args[args.index("--references") + 1] = "fcaformer_nano"
    assert main(args) == 0
    df = _frame(out)
    assert (df["status"] == "failed").all()
    assert df["reason"].str.contains("unsupported").all()
    assert df["reason"].str.contains("onnxruntime cannot run this model").all()
    assert df["latency_ms"].isna().all() and df["latency_stable"].isna().all()
    assert (df["runtime"] == "onnxruntime").all()
    refs = pd.read_csv(out / "references.csv")
    assert refs.loc[0, "status"] == "unsupported" and pd.isna(refs.loc[0, "latency_ms"])
    final = json.loads((out / "final.json").read_text())
    (ref,) = final["models"]
    assert ref["status"] == "unsupported" and ref["final_latency_ms"] is None


def test_measurement_options_are_checked_and_stored():
    from fcasearch.search.options import DEFAULT_REFERENCES, SearchError, SearchOptions

    o = SearchOptions(space="s.yaml")
    assert o.runtime == "eager" and o.references == DEFAULT_REFERENCES and o.final_rounds == 10
    assert SearchOptions(space="s.yaml", references=["none"]).references == ()
    two = SearchOptions(space="s.yaml", references="convnext_tiny, fcaformer_l2")
    assert two.references == ("convnext_tiny", "fcaformer_l2")
    assert two.to_dict()["references"] == ["convnext_tiny", "fcaformer_l2"]
    assert SearchOptions.from_mapping(two.to_dict()).references == two.references
    with pytest.raises(SearchError, match=r"resnet50.*convnext_tiny"):
        SearchOptions(space="s.yaml", references=["resnet50"])
    with pytest.raises(SearchError, match="latency_cv_threshold"):
        SearchOptions(space="s.yaml", latency_cv_threshold=0)
    with pytest.raises(SearchError, match="final_rounds"):
        SearchOptions(space="s.yaml", final_rounds=-1)
    with pytest.raises(SearchError, match="one runtime per search"):
        SearchOptions(space="s.yaml", runtime="eager,onnxruntime")
