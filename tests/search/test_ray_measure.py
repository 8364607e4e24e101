"""--runtime, reference models and the final re-measurement on the Ray executor: the same files
and rows as the local executor, the references and final rounds measured as Ray tasks."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pandas as pd
import pytest
import yaml
from searchkit import TINY_SPACE, search_args

from fcasearch.cli import main


@pytest.mark.slow
def test_ray_search_on_a_runtime_measures_references_and_final_rounds(tmp_path):
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    out = tmp_path / "run"
    args = search_args(space, out, "--n-trials", "2", "--objectives", "accuracy:max",
                       "latency_ms:min", "--executor", "ray", "--max-concurrent", "2",
                       "--cpus-per-trial", "1", "--runtime", "onnxruntime",
                       "--final-rounds", "3")  # fmt: skip
    args[args.index("--references") + 1] = "fcaformer_nano"
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            code = main(args)
    finally:
        from fcasearch.search.ray_env import ray_temp_dir

        shutil.rmtree(ray_temp_dir(out), ignore_errors=True)
    assert code == 0, text.getvalue()[-3000:]
    assert yaml.safe_load((out / "run.yaml").read_text())["runtime"] == "onnxruntime"
    df = pd.read_parquet(out / "trials.parquet")
    measured = df[df["latency_ms"].notna()]
    assert len(measured) >= 1 and set(measured["runtime"]) == {"onnxruntime"}
    assert measured["latency_attempts"].ge(1).all() and measured["latency_stable"].notna().all()
    refs = pd.read_csv(out / "references.csv")
    assert refs.loc[0, "model"] == "fcaformer_nano" and refs.loc[0, "runtime"] == "onnxruntime"
    assert refs.loc[0, "threads"] == 1  # the run's --threads, as for the candidates
    final = json.loads((out / "final.json").read_text())
    assert final["runtime"] == "onnxruntime"
    kinds = [m["kind"] for m in final["models"]]
    assert kinds.count("reference") == 1 and kinds.count("candidate") >= 1
    assert all(m["final_latency_ms"] > 0 for m in final["models"])
    assert "Kendall tau" in text.getvalue()
