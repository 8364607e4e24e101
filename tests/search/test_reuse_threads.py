"""A reused row says the thread count its numbers were measured with, not the count of the
process that copies it: in a run resumed on another executor (Ray trials train with
``--cpus-per-trial`` threads, local ones with the driver's), the copied latency was labelled
with the new count."""

from __future__ import annotations

import json

import optuna
import torch

from fcasearch.search.objective import reused_result
from fcasearch.search.placement import placement_columns
from fcasearch.search.shared import shared_metrics
from fcasearch.space import load_space
from fcasearch.spec import ArchSpec


def _measured_row(spec: ArchSpec, threads: int) -> dict:
    fingerprint = {"device": "cpu", "cpu_model": "X", "threads": threads}
    return {
        "trial": 3, "status": "complete", "arch_id": spec.arch_id, "accuracy": 0.5,
        "latency_ms": 1.25, "threads": threads, "fingerprint": json.dumps(fingerprint),
    }  # fmt: skip


def test_a_reused_row_keeps_the_threads_of_its_measurement(monkeypatch):
    spec = load_space("micro").sample_feasible(__import__("numpy").random.default_rng(0))
    here = torch.get_num_threads()
    earlier = here + 3  # never this process's count
    cached = _measured_row(spec, earlier)
    result = reused_result(cached, spec)
    assert placement_columns(result.fingerprint)["threads"] == earlier
    assert json.loads(result.row(9, "run")["fingerprint"])["cpu_model"] == "X"
    # what another driver of a shared study reads: no fingerprint, its threads kept
    shared = shared_metrics(cached)
    assert shared["threads"] == earlier and "fingerprint" not in shared
    assert placement_columns(reused_result(shared, spec).fingerprint)["threads"] == earlier
    # a row without either: the threads of this process, as before
    bare = {k: v for k, v in cached.items() if k not in ("threads", "fingerprint")}
    assert placement_columns(reused_result(bare, spec).fingerprint)["threads"] == here


def test_a_ray_trial_config_carries_the_measurements_threads():
    from fcasearch.search.ray_executor import trial_config

    space = load_space("micro")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    first = trial_config(study.ask(), space, {}, "run")
    spec = ArchSpec.from_json(first["spec"])
    earlier = torch.get_num_threads() + 3
    study2 = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    cfg = trial_config(study2.ask(), space, {spec.arch_id: _measured_row(spec, earlier)}, "run")
    # what the trainable reports for the reused row (ray_executor._trainable calls this)
    from fcasearch.search.ray_executor import reused_report

    report = reused_report(cfg["reuse"], "node-1")
    assert report["threads"] == earlier and report["ray_node"] == "node-1"
    assert json.loads(report["row"])["threads"] == earlier
