"""``fcasearch profile``: resolution of model names, the grid, the files, the command end to end."""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest
import torch

import fcasearch.measure.profile as profile_mod
from fcasearch.commands import profile as profile_cmd
from fcasearch.measure.cost import CostResult
from fcasearch.measure.profile import PROFILE_COLUMNS, profile_grid, resolve_target, write_profile
from fcasearch.models import get_spec

REQUIRED = [
    "model", "arch_id", "batch_size", "dtype", "device", "runtime", "runtime_version",
    "runtime_options", "threads",
    "latency_stable", "params", "macs", "latency_ms",
    "latency_p90_ms", "latency_cv", "throughput_ips", "peak_mem_mb", "train_mem_mb",
    "energy_mj_per_image", "weights_mb", "status", "notes", "fingerprint_id", "fingerprint",
]  # fmt: skip
FAST = [
    "--warmup",
    "1",
    "--max-repeats",
    "5",
    "--max-seconds",
    "0.2",
    "--energy-seconds",
    "0.1",
    "--retries",
    "0",
]


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fcasearch profile")
    profile_cmd.add_arguments(parser)
    return profile_cmd.run(parser.parse_args(argv))


def test_cli_end_to_end_on_cpu(tmp_path, capsys):
    spec_file = tmp_path / "cand.json"
    spec_file.write_text(get_spec("fcaformer_tiny", img_size=32, num_classes=10).to_json())
    out = tmp_path / "prof" / "p.csv"
    argv = ["fcaformer_nano", str(spec_file), "--img-size", "32", "--classes", "10"]
    code = run_cli(
        [
            *argv,
            "--batch-sizes",
            "1,2",
            "--dtypes",
            "fp32,bf16",
            "--threads",
            "1",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "fcaformer_nano" in text and "cand" in text and "energy: unavailable" in text
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 2
    assert set(REQUIRED) <= set(rows[0])
    assert [(r["model"], r["batch_size"], r["dtype"]) for r in rows[:4]] == [
        ("fcaformer_nano", "1", "fp32"), ("fcaformer_nano", "2", "fp32"),
        ("fcaformer_nano", "1", "bf16"), ("fcaformer_nano", "2", "bf16"),
    ]  # fmt: skip
    for r in rows:
        assert r["status"] == "ok" and r["device"] == "cpu" and r["energy_mj_per_image"] == ""
        assert r["runtime"] == "eager" and r["runtime_version"].startswith("torch ")
        assert r["threads"] == "1" and r["latency_stable"] in ("True", "False")
        assert float(r["latency_ms"]) > 0 and float(r["peak_mem_mb"]) > 0
        assert json.loads(r["fingerprint"])["threads"] == 1 and len(r["fingerprint_id"]) == 12
    cand = [r for r in rows if r["model"] == "cand"]
    assert cand[0]["arch_id"] == get_spec("fcaformer_tiny", img_size=32, num_classes=10).arch_id
    # the input each row was measured at, which a report matches with its runs'
    assert {(r["img_size"], r["num_classes"]) for r in rows} == {("32x32", "10")}
    assert {r["latency_attempts"] for r in rows} <= {"1", "2", "3"}
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data) == 8 and data[0]["energy_mj_per_image"] is None
    assert data[0]["fingerprint"]["device"] == "cpu"


def test_cli_profiles_a_baseline(tmp_path):
    out = tmp_path / "b.csv"
    assert (
        run_cli(["deit_s_like", "--img-size", "32", "--no-memory", "--out", str(out), *FAST]) == 0
    )
    (row,) = list(csv.DictReader(out.open()))
    assert row["model"] == "deit_s_like" and row["arch_id"] == "" and row["status"] == "ok"
    assert 21e6 < float(row["params"]) < 23e6 and "fvcore" in row["notes"]


@pytest.mark.slow
def test_one_row_per_model_and_runtime_for_candidates_and_reference_models(tmp_path, capsys):
    out = tmp_path / "r.csv"
    argv = ["fcaformer_nano", "deit_s_like", "--img-size", "32", "--runtime", "eager,onnxruntime"]
    assert run_cli([*argv, "--no-memory", "--threads", "1", "--out", str(out), *FAST]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["model"], r["runtime"]) for r in rows] == [
        ("fcaformer_nano", "eager"), ("fcaformer_nano", "onnxruntime"),
        ("deit_s_like", "eager"), ("deit_s_like", "onnxruntime"),
    ]  # fmt: skip
    for r in rows:
        assert r["status"] == "ok" and float(r["latency_ms"]) > 0, r["reason"]
        assert "interleaved with eager, onnxruntime" in r["notes"]
    nano_eager, nano_ort, deit_eager, deit_ort = rows
    # candidates folded, reference models as built: the same policy on every runtime
    assert "fuse_for_inference" in nano_eager["notes"] and "fuse_for_inference" in nano_ort["notes"]
    assert "as built" in deit_eager["notes"] and "as built" in deit_ort["notes"]
    assert nano_ort["runtime_version"].startswith("onnxruntime ")
    assert "max abs diff vs eager" in deit_ort["notes"]
    text = capsys.readouterr().out
    assert "onnxruntime" in text and "runtimes: eager: torch" in text


def test_runtime_options_reach_the_runtime_and_every_row(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o.csv"
    argv = ["fcaformer_nano", "--img-size", "32", "--no-memory", "--threads", "2", *FAST]
    opts = ["--runtime-option", "eager.pointwise_conv=false"]
    assert run_cli([*argv, *opts, "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["runtime"] == "eager" and row["runtime_options"] == "pointwise_conv=False"
    assert "1x1 convolutions" not in row["notes"]
    assert "runtimes: eager: torch" in capsys.readouterr().out
    assert run_cli([*argv, "--out", str(out)]) == 0  # the defaults: an empty column
    (row,) = list(csv.DictReader(out.open()))
    assert row["runtime_options"] == "" and "1x1 convolutions" in row["notes"]

    # failed cells keep the options too
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(profile_mod, "measure_costs", broken)
    assert run_cli([*argv, *opts, "--out", str(out)]) == 1
    (row,) = list(csv.DictReader(out.open()))
    assert row["status"] == "failed" and row["runtime_options"] == "pointwise_conv=False"


def test_bad_runtime_options_are_user_errors(capsys):
    for extra, message in [
        (["eager.bogus=1"], "runtime 'eager' has no option(s) ['bogus']; it takes pointwise_conv"),
        (["onnxruntime.exporter=dynamo"], "onnxruntime is not among the runtimes measured"),
        (["pointwise_conv=false"], "give RUNTIME.KEY=VALUE"),
        (["eager.pointwise_conv=maybe"], "pointwise_conv: 'maybe' is not True or False"),
    ]:
        argv = ["fcaformer_nano", *(a for e in extra for a in ("--runtime-option", e))]
        assert run_cli(argv) == 2
        assert message in capsys.readouterr().err


def test_runtime_that_cannot_run_here_is_a_user_error(capsys):
    assert run_cli(["fcaformer_nano", "--runtime", "eager,tensorrt"]) == 2
    assert "NVIDIA GPUs only" in capsys.readouterr().err
    parser = argparse.ArgumentParser()
    profile_cmd.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["m", "--runtime", "tvm"])


def test_unknown_model_is_a_user_error(capsys):
    assert run_cli(["no_such_model"]) == 2
    err = capsys.readouterr().err
    assert "no_such_model" in err and "fcaformer_l1" in err and "convnext_tiny" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_gpu_is_a_user_error(capsys):
    assert run_cli(["fcaformer_nano", "--device", "cuda"]) == 2
    assert "use --device cpu" in capsys.readouterr().err


def test_cuda_graph_on_cpu_is_a_user_error(capsys):
    assert run_cli(["fcaformer_nano", "--cuda-graph"]) == 2
    assert "CUDA graphs need a CUDA device" in capsys.readouterr().err


def test_bad_option_values_are_rejected():
    parser = argparse.ArgumentParser()
    profile_cmd.add_arguments(parser)
    for bad in (["m", "--batch-sizes", "0"], ["m", "--dtypes", "fp8"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            ["--max-repeats", "3"],
            "--max-repeats 3: must be a whole number >= 5 (every cell times 5 runs before it may "
            "stop); give --max-repeats 5 or more",
        ),
        (["--max-repeats", "0"], "--max-repeats 0: must be a whole number >= 5"),
        (["--cv-threshold", "-1"], "--cv-threshold -1: must be a positive number (e.g. 0.1)"),
        (["--cv-threshold", "nan"], "--cv-threshold nan: must be a positive number"),
        (["--warmup", "-1"], "--warmup -1: must be a whole number >= 0; give --warmup 0 or more"),
        (["--retries", "-1"], "--retries -1: must be a whole number >= 0"),
        (["--target-cv", "-0.5"], "--target-cv -0.5: must be a number >= 0, e.g. 0.01"),
        (["--target-cv", "nan"], "--target-cv nan: must be a number >= 0"),
        (["--max-seconds", "0"], "--max-seconds 0: must be a positive number (seconds, e.g. 10)"),
        (["--energy-seconds", "-1"], "--energy-seconds -1: must be a positive number (seconds"),
        (["--energy-seconds", "nan"], "--energy-seconds nan: must be a positive number"),
        (["--threads", "0"], "--threads 0: must be a whole number >= 1"),
        (["--img-size", "0"], "--img-size 0: must be a whole number >= 1"),
        (["--classes", "0"], "--classes 0: must be a whole number >= 1"),
    ],
)
def test_a_setting_no_cell_could_be_measured_with_is_a_user_error(extra, says, tmp_path, capsys):
    """One line and exit 2 before anything is measured or written (each row failed with it, or
    the grid was measured with it, and the CSV was written)."""
    out = tmp_path / "p.csv"
    assert run_cli(["fcaformer_nano", "--no-memory", *FAST, *extra, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fcasearch profile: error: "), err
    assert says in err, err
    assert not out.exists() and not captured.out.strip()


def test_the_least_max_repeats_is_in_the_help_and_the_measurement(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    profile_cmd.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "--max-repeats MAX_REPEATS cap on timed runs, at least 5:" in text
    seen = {}

    def fake_measure(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("not measured")

    monkeypatch.setattr(profile_mod, "measure_costs", fake_measure)
    assert run_cli(["fcaformer_nano", "--max-repeats", "5", "--out", str(tmp_path / "p.csv")]) == 1
    assert (seen["min_repeats"], seen["max_repeats"]) == (5, 5)  # the least is accepted


def test_resolve_names_files_and_overrides(tmp_path):
    assert resolve_target("fcaformer_l1").spec == get_spec("fcaformer_l1")
    t = resolve_target("swin_t", img_size=64, num_classes=7)
    assert t.baseline == "swin_t" and t.img_size == 64 and t.arch_id == ""
    f = tmp_path / "x.json"
    f.write_text(get_spec("fcaformer_nano", img_size=64).to_json())
    assert resolve_target(str(f)).spec.img_size == (64, 64)
    assert resolve_target(str(f), img_size=64).spec.img_size == (64, 64)  # its own: accepted
    with pytest.raises(ValueError, match="--img-size 32: MODEL is a spec JSON"):
        resolve_target(str(f), img_size=32)  # the spec fixes it (part of its arch_id)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_target(str(tmp_path / "missing.json"))
    f.write_text('{"stages": []}')
    with pytest.raises(ValueError, match="not a valid spec"):
        resolve_target(str(f))
    with pytest.raises(ValueError, match="multiple of 16"):
        resolve_target("deit_s_like", img_size=40)


def test_oom_rows_are_kept_and_larger_batches_skipped(monkeypatch):
    calls = []

    def fake_measure(model, *, batch_size, dtype, fingerprint, runtimes, **kwargs):
        calls.append(batch_size)
        res = CostResult(
            metrics={"params": 1.0}, fingerprint=fingerprint, batch_size=batch_size, dtype=dtype
        )
        if batch_size >= 4:
            res.status, res.reason = "oom", f"out of memory at batch size {batch_size}"
        return [res]

    monkeypatch.setattr(profile_mod, "measure_costs", fake_measure)
    rows = profile_grid([resolve_target("fcaformer_nano")], batch_sizes=[1, 4, 16])
    assert calls == [1, 4]
    assert [r["status"] for r in rows] == ["ok", "oom", "oom"]
    assert rows[2]["reason"].startswith("skipped: batch size 4")
    assert math.isnan(rows[2]["latency_ms"])


def test_failed_cell_does_not_end_the_grid(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(profile_mod, "measure_costs", boom)
    rows = profile_grid(
        [resolve_target("fcaformer_nano")],
        dtypes=["fp32", "bf16"],
        runtimes=["eager", "onnxruntime"],
    )
    assert [r["status"] for r in rows] == ["failed"] * 4 and "kaboom" in rows[0]["reason"]
    assert [r["runtime"] for r in rows] == ["eager", "onnxruntime"] * 2


def test_write_profile_formats(tmp_path):
    row = dict.fromkeys(PROFILE_COLUMNS, "")
    row.update(model="m", latency_ms=math.nan, params=5.0, fingerprint='{"device": "cpu"}')
    csv_path, json_path = write_profile([row], tmp_path / "o.csv")
    (back,) = list(csv.DictReader(csv_path.open()))
    assert back["latency_ms"] == "" and back["params"] == "5.0"
    (obj,) = json.loads(json_path.read_text())
    assert obj["latency_ms"] is None and obj["fingerprint"] == {"device": "cpu"}
    with pytest.raises(ValueError, match="csv"):
        write_profile([row], tmp_path / "o.txt")


def test_main_cli_dispatches_profile(tmp_path):
    from fcasearch import cli

    parser = cli.build_parser()  # every subcommand imports: a broken one fails here
    args = parser.parse_args(["profile", "fcaformer_nano", "--img-size", "32"])
    assert args.models == ["fcaformer_nano"] and args._module == "profile"


def test_spec_json_text_and_run_trials_resolve_as_export_resolves_them(tmp_path):
    from fcasearch.storage import RunDir, TrialLog

    spec = get_spec("fcaformer_nano", img_size=32, in_chans=1, num_classes=10)
    text = spec.to_json()
    assert len(text) > 255  # longer than a file name may be: never taken for one
    t = resolve_target(text)
    assert t.spec == spec and t.label == f"spec {spec.arch_id}"
    with pytest.raises(ValueError, match="--img-size 64"):
        resolve_target(text, img_size=64)
    run = RunDir(tmp_path / "run")
    TrialLog(run).append({"trial": 0, "arch_id": spec.arch_id, "spec": text, "status": "complete"})
    t = resolve_target(f"{run.root}:{spec.arch_id}")
    assert t.spec == spec and t.label == f"run:{spec.arch_id}"
    with pytest.raises(ValueError, match="not a valid spec"):
        resolve_target('{"a": 1}')
    for odd in ("x" * 300, "a\x00b", "run:" + "y" * 300):
        with pytest.raises(ValueError, match="is not a registry model"):
            resolve_target(odd)


def test_cli_profiles_a_spec_given_as_json_text(tmp_path, capsys):
    spec = get_spec("fcaformer_nano", img_size=32, in_chans=1, num_classes=10)
    out = tmp_path / "p.csv"
    argv = [spec.to_json(), "--no-memory", "--no-energy", *FAST, "--out", str(out)]
    assert run_cli(argv) == 0
    (row,) = csv.DictReader(out.open())
    assert row["arch_id"] == spec.arch_id and row["status"] == "ok"
    assert run_cli(["y" * 300, *FAST]) == 2
    err = capsys.readouterr().err
    assert "is not a registry model" in err and "(300 characters)" in err


def test_the_table_says_why_a_memory_column_is_empty(tmp_path, capsys):
    """ONNX Runtime's peak MiB showed "-" with the reason only in the row's notes."""
    argv = ["fcaformer_nano", "--img-size", "32", "--runtime", "onnxruntime", "--threads", "1"]
    assert run_cli([*argv, "--no-energy", *FAST]) == 0
    text = capsys.readouterr().out
    assert "peak_mem: not measured on onnxruntime" in text, text
