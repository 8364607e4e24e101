"""The Ray executor on a local 2-CPU Ray: same trials, same results, nothing beyond loopback, a
Tune folder that Ray's own API reads, and --runtime, reference models and the final
re-measurement as on the local executor (measured as Ray tasks). One search (one Ray) is checked
by one test: with the checks as separate tests, pytest-xdist could run them on two workers, and
each worker ran the 35-s search itself."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import shutil
import time

import optuna
import pandas as pd
import pytest
import yaml
from netwatch import PeerWatch
from searchkit import TINY_SPACE, search_args

from fcasearch.cli import main
from fcasearch.search.ray_env import ray_temp_dir


def test_peer_watch_sees_a_connection():
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    with PeerWatch() as watch:
        cli = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        time.sleep(0.3)
        cli.close(), conn.close(), srv.close()
    assert ipaddress.ip_address("127.0.0.1") in watch.peers and not watch.outside()


@pytest.mark.slow
def test_one_ray_search_and_what_it_leaves(tmp_path):
    """A 3-trial Ray search measuring latency on ONNX Runtime, with a reference model, the final
    re-measurement and its report; then each check below on it."""
    import ray

    space, out = tmp_path / "tiny.yaml", tmp_path / "run"
    space.write_text(TINY_SPACE)
    args = search_args(space, out, "--n-trials", "3", "--objectives", "accuracy:max",
                        "latency_ms:min", "--executor", "ray", "--max-concurrent", "2",
                        "--cpus-per-trial", "1", "--runtime", "onnxruntime",
                        "--final-rounds", "3")  # fmt: skip
    args[args.index("--references") + 1] = "fcaformer_nano"
    args.remove("--no-report")  # the report is built at the end, as users run it
    text = io.StringIO()
    with PeerWatch() as watch, contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = main(args)
    assert code == 0, text.getvalue()[-3000:]
    assert not ray.is_initialized()  # the run shut down the Ray it started
    run = (out, watch, text.getvalue())
    try:
        for check in (
            _runs_the_same_trials_and_stays_on_loopback,
            _builds_its_report_on_one_fingerprint,
            _each_row_says_where_it_ran,
            _tune_restores_the_run_and_its_dataframe_has_the_metrics,
            _experiment_analysis_loads_the_run,
            _ray_session_files_stay_out_of_the_results,
            _the_runtime_reference_and_final_rounds_are_measured_on_ray,
        ):
            check(run)
    finally:
        shutil.rmtree(ray_temp_dir(out), ignore_errors=True)  # the session files outside the run


def _options_and_space(out):
    from fcasearch.search.options import SearchOptions
    from fcasearch.space import load_space

    doc = yaml.safe_load((out / "run.yaml").read_text())
    return SearchOptions.from_mapping(doc["options"]), load_space(doc["space"])


def _runs_the_same_trials_and_stays_on_loopback(run):
    out, watch, _ = run
    assert not watch.outside(), f"connections beyond loopback: {watch.outside()}"
    home = out / "ray" / "home" / "ray_bootstrap_config.yaml"
    assert home.read_text().strip().endswith("type: local")
    df = pd.read_parquet(out / "trials.parquet")
    assert len(df) == 3 and set(df["status"]) == {"complete"}
    assert df["accuracy"].between(0, 1).all() and df["arch_id"].str.len().eq(12).all()
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    assert sorted(t.user_attrs["arch_id"] for t in done) == sorted(df["arch_id"])


def _builds_its_report_on_one_fingerprint(run):
    """Workers (1 thread) and the driver measure on one machine: one fingerprint, a report."""
    out, _, text = run
    assert "not built" not in text and (out / "report" / "index.html").exists()
    df = pd.read_parquet(out / "trials.parquet")
    run_fp = yaml.safe_load((out / "run.yaml").read_text())["fingerprint_id"]
    measured = df[df["notes"].fillna("").str.contains("reused_from") == False]  # noqa: E712
    assert set(measured["fingerprint_id"]) == {run_fp}


def _each_row_says_where_it_ran(run):
    import ray

    out, _, _ = run
    df = pd.read_parquet(out / "trials.parquet")
    assert df["ray_node"].str.fullmatch(r"[0-9a-f]{20,}").all()  # Ray node ids (hex)
    assert (df["cuda_visible_devices"] == "").all()  # no GPU reserved: Ray hides them all
    assert (df["threads"] == 1).all()  # --threads 1
    assert ray.is_initialized() is False


def _tune_restores_the_run_and_its_dataframe_has_the_metrics(run):
    """The saved searcher holds no live object: Tune can restore the experiment, and its result
    grid has the run's metrics as columns, with the run's own numbers."""
    from ray import tune

    from fcasearch.search.ray_executor import make_trainable

    out, _, _ = run
    options, space = _options_and_space(out)
    tuner = tune.Tuner.restore(
        str(out / "ray" / "results" / "tune"), make_trainable(options, space)
    )
    grid = tuner.get_results()
    assert len(grid) == 3 and not grid.errors
    frame = grid.get_dataframe()
    rows = pd.read_parquet(out / "trials.parquet").set_index("trial")
    assert len(frame) == 3
    for col in ("macs", "latency_ms", "params", "accuracy"):
        assert frame[col].notna().all(), col
    for _, r in frame.iterrows():  # the same numbers as the run's own table
        row = rows.loc[int(r["trial"])]
        assert r["macs"] == row["macs"] and r["latency_ms"] == row["latency_ms"]
        assert json.loads(r["row"])["arch_id"] == row["arch_id"] == r["arch_id"]


def _experiment_analysis_loads_the_run(run):
    from ray.tune import ExperimentAnalysis

    out, _, _ = run
    analysis = ExperimentAnalysis(str(out / "ray" / "results" / "tune"))
    frame = analysis.dataframe()
    assert len(frame) == 3 and frame["accuracy"].between(0, 1).all()


def _ray_session_files_stay_out_of_the_results(run):
    out, _, _ = run
    tmp = ray_temp_dir(out)
    assert out not in tmp.parents and any(tmp.glob("session_*"))
    leaks = [p for p in out.rglob("*") if p.name.startswith("session_") or p.suffix == ".sock"]
    assert not leaks, leaks


def _the_runtime_reference_and_final_rounds_are_measured_on_ray(run):
    out, _, text = run
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
    assert "Kendall tau" in text
