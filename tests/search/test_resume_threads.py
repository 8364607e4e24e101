"""A resumed run measures with the thread count its earlier trials used, whichever executor
resumes it: left unset, a Ray trial takes ``cpus_per_trial`` threads and a local one torch's
default, and a Ray run resumed with ``--executor local`` mixed 1- and 2-thread latencies (the
report then refused the run)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from fcasearch.cli import build_parser
from fcasearch.commands.search import resolve
from fcasearch.search.options import SearchError

REPO = Path(__file__).resolve().parents[2]
MICRO = str(REPO / "search_spaces" / "micro.yaml")


def _run_dir(
    root: Path, rows: Sequence[dict] = (), fingerprint_threads: int = 2, **options
) -> Path:
    root.mkdir()
    doc = {
        "fingerprint": {"device": "cpu", "threads": fingerprint_threads},
        "options": {"space": MICRO, "threads": None, **options},
        "space": {},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(doc))
    (root / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _resolved(*argv: str):
    return resolve(build_parser("search").parse_args(["search", *argv]))[0]


def test_the_earlier_thread_count(tmp_path):
    from fcasearch.search.runner import earlier_threads

    rows = [{"trial": 1, "threads": 1}, {"trial": 0, "threads": 1}]
    ray_run = _run_dir(tmp_path / "ray", rows, executor="ray", cpus_per_trial=1.0)
    stored = yaml.safe_load((ray_run / "run.yaml").read_text())["options"]
    assert earlier_threads(ray_run, stored) == 1  # the rows say so
    assert earlier_threads(ray_run, {**stored, "threads": 3}) == 3  # --threads, as given
    # no row yet: what the first run's executor gave its trials
    empty_ray = _run_dir(tmp_path / "empty-ray", executor="ray", cpus_per_trial=2.0)
    stored = yaml.safe_load((empty_ray / "run.yaml").read_text())["options"]
    assert earlier_threads(empty_ray, stored) == 2
    empty_local = _run_dir(tmp_path / "empty-local", fingerprint_threads=4, executor="local")
    stored = yaml.safe_load((empty_local / "run.yaml").read_text())["options"]
    assert earlier_threads(empty_local, stored) == 4


def test_a_resumed_run_keeps_its_thread_count_on_either_executor(tmp_path):
    ray_run = _run_dir(
        tmp_path / "ray", [{"trial": 0, "threads": 1}], executor="ray", cpus_per_trial=1.0
    )
    assert _resolved("--resume", str(ray_run), "--executor", "local").threads == 1
    assert _resolved("--resume", str(ray_run), "--cpus-per-trial", "2").threads == 1
    assert _resolved("--resume", str(ray_run), "--threads", "1").threads == 1
    with pytest.raises(SearchError, match=r"threads 1 -> 2 would change"):
        _resolved("--resume", str(ray_run), "--executor", "local", "--threads", "2")
    local_run = _run_dir(tmp_path / "local", [{"trial": 0, "threads": 2}], executor="local")
    assert _resolved("--resume", str(local_run), "--executor", "ray").threads == 2


def test_a_ray_run_resumed_locally_measures_with_its_threads(tmp_path):
    """End to end, in subprocesses (torch's default thread count is the process's own): a run
    whose trials ran with another count than this driver's default (as a Ray run's 1-thread
    trials on a 2-core machine) resumed with --executor local keeps that count."""
    out = tmp_path / "run"
    search = [sys.executable, str(REPO / "search.py")]
    common = ["--no-progress", "--no-report"]
    first = [
        "--space", MICRO, "--out", str(out), "--budget", "dry=0.01", "--objectives",
        "accuracy:max", "macs:min", "--n-trials", "2", "--references", "none",
        "--final-rounds", "0",
    ]  # fmt: skip
    done = subprocess.run([*search, *first, *common], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    log = out / "trials.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    default = rows[0]["threads"]
    earlier = 1 if default != 1 else 2
    # make it the Ray run: cpus_per_trial threads in each of its trials
    log.write_text("".join(json.dumps({**r, "threads": earlier}) + "\n" for r in rows))
    doc = yaml.safe_load((out / "run.yaml").read_text())
    doc["executor"] = doc["options"]["executor"] = "ray"
    doc["options"]["cpus_per_trial"] = float(earlier)
    (out / "run.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    again = ["--resume", str(out), "--n-trials", "4", "--executor", "local"]
    done = subprocess.run([*search, *again, *common], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    threads = [json.loads(line)["threads"] for line in log.read_text().splitlines()]
    assert threads == [earlier] * 4, threads
