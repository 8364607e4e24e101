"""The final re-measurement's Kendall tau, and the measurement jobs' contract."""

from __future__ import annotations

import math
import random

import pytest

from fcasearch.search.final import kendall_tau, summary_line


def test_kendall_tau_of_unmoved_and_reversed_rankings():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert kendall_tau(a, [10, 20, 30, 40, 50]) == 1.0
    assert kendall_tau(a, [5, 4, 3, 2, 1]) == -1.0
    assert kendall_tau(a, [2, 1, 3, 4, 5]) == pytest.approx(0.8)  # one swapped pair of ten


def test_kendall_tau_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(20):
        x = [rng.choice([1.0, 2.0, 3.0, 4.0]) for _ in range(9)]
        y = [rng.choice([1.0, 2.0, 3.0]) for _ in range(9)]
        ref = scipy_stats.kendalltau(x, y).statistic  # tau-b
        got = kendall_tau(x, y)
        assert (math.isnan(ref) and math.isnan(got)) or got == pytest.approx(ref)


def test_kendall_tau_skips_missing_pairs_and_needs_two():
    assert kendall_tau([1.0, math.nan, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert math.isnan(kendall_tau([1.0], [1.0]))
    assert math.isnan(kendall_tau([1.0, 1.0], [1.0, 2.0]))  # one side constant


def test_summary_line_names_rounds_runtime_and_tau():
    final = {
        "runtime": "eager",
        "rounds": 10,
        "kendall_tau": 0.8,
        "kendall_pairs": 5,
        "models": [
            {"kind": "candidate", "final_latency_cv": 0.02, "final_latency_stable": True},
            {"kind": "candidate", "final_latency_cv": 0.3, "final_latency_stable": False},
            {"kind": "reference", "final_latency_cv": 0.01, "final_latency_stable": True},
        ],
    }
    line = summary_line(final)
    assert "2 Pareto + 1 reference models in 10 interleaved rounds on eager" in line
    assert "1 unstable" in line and "Kendall tau in-search vs final 0.800 over 5 models" in line
    line = summary_line({**final, "runtime_options": {"pointwise_conv": False}})
    assert "10 interleaved rounds on eager (pointwise_conv=False):" in line


def test_the_final_rounds_time_each_pareto_architecture_once(tiny_space, search_args, tmp_path):
    import json

    import pandas as pd

    from fcasearch.cli import main

    # the tiny space has 4 networks: 5 trials repeat one, and repeats share one final figure
    out = tmp_path / "run"
    args = search_args(
        tiny_space, out, "--n-trials", "5", "--objectives", "accuracy:max", "macs:min",
        "--sampler", "random", "--final-rounds", "2",
    )  # fmt: skip
    args[args.index("--references") + 1] = "deit_s_like"  # a torchvision baseline, 3 channels
    assert main(args) == 0
    refs = pd.read_csv(out / "references.csv")
    assert refs.loc[0, "model"] == "deit_s_like" and refs.loc[0, "status"] == "ok"
    assert refs.loc[0, "runtime"] == "eager" and refs.loc[0, "latency_ms"] > 0
    assert "counted on the module" in refs.loc[0, "notes"]  # a plain module, fvcore MACs
    # the columns of a profile row: the input it was measured at and the runtime's options
    assert refs.loc[0, "latency_attempts"] >= 1 and pd.isna(refs.loc[0, "runtime_options"])
    assert refs.loc[0, "num_classes"] == 10 and refs.loc[0, "img_size"] == "32x32"
    pareto = pd.read_csv(out / "pareto.csv")
    final = json.loads((out / "final.json").read_text())
    cands = [m for m in final["models"] if m["kind"] == "candidate"]
    assert len({m["arch_id"] for m in cands}) == len(cands) == pareto["arch_id"].nunique()
    assert sorted(t for m in cands for t in m["trials"]) == sorted(pareto["trial"])
    # 2 rounds each (more for a model re-measured for being unstable)
    assert all(m["rounds"] >= 2 and m["final_latency_ms"] > 0 for m in cands)
    (ref,) = [m for m in final["models"] if m["kind"] == "reference"]
    assert ref["model"] == "deit_s_like" and ref["final_latency_ms"] > 0


def test_the_pareto_tau_leaves_the_reference_models_out(tmp_path):
    import json

    import pandas as pd

    from fcasearch.search.final import SearchMeasurements
    from fcasearch.search.objective import TrialContext
    from fcasearch.search.options import SearchOptions
    from fcasearch.storage.records import RunDir

    options = SearchOptions(space="s.yaml", references=("deit_s_like",), final_rounds=3)
    done = SearchMeasurements(TrialContext(options, space=None), RunDir(tmp_path))
    assert done.needed
    # the reference was measured before the first trial: 100 ms, and 100 ms again at the end
    pd.DataFrame([{"model": "deit_s_like", "latency_ms": 100.0}]).to_csv(
        done.references_csv, index=False
    )
    front = pd.DataFrame(
        {
            "trial": [0, 1, 2],
            "arch_id": ["a", "b", "c"],
            "spec": ['{"a": 1}', '{"b": 1}', '{"c": 1}'],
            "latency_ms": [1.0, 2.0, 3.0],
        }
    )
    final_ms = {"trial 0": 3.0, "trial 1": 2.0, "trial 2": 1.0, "deit_s_like": 100.0}
    jobs = []

    def call(job, payload):
        jobs.append(job)
        assert [it["name"] for it in payload["items"]] == list(final_ms)
        return {name: {"latency_ms": ms, "rounds": 3} for name, ms in final_ms.items()}

    final = done.after(call, front)
    assert jobs == ["final"]
    # the Pareto set's ranking is reversed; the reference, the slowest both times, agrees
    assert final["kendall_tau_pareto"] == -1.0 and final["kendall_pairs_pareto"] == 3
    assert final["kendall_tau"] == 0.0 and final["kendall_pairs"] == 4
    assert json.loads(done.final_json.read_text())["kendall_tau_pareto"] == -1.0
    by_name = {m["name"]: m for m in final["models"]}
    assert by_name["trial 0"]["search_latency_ms"] == 1.0
    assert by_name["trial 0"]["final_latency_ms"] == 3.0
    assert by_name["deit_s_like"]["kind"] == "reference"


def test_models_that_moved_far_from_their_in_search_figure_are_named(tmp_path):
    """A reference measured at 1233.9 ms in the search (marked stable: load had slowed the whole
    attempt alike) and 5.85 ms in the final rounds went into tau without a word."""
    import json

    import pandas as pd

    from fcasearch.search.final import SearchMeasurements
    from fcasearch.search.objective import TrialContext
    from fcasearch.search.options import SearchOptions
    from fcasearch.storage.records import RunDir

    options = SearchOptions(space="s.yaml", references=("fcaformer_l1",), final_rounds=3)
    done = SearchMeasurements(TrialContext(options, space=None), RunDir(tmp_path))
    pd.DataFrame([{"model": "fcaformer_l1", "latency_ms": 1233.9, "latency_stable": True}]).to_csv(
        done.references_csv, index=False
    )
    front = pd.DataFrame(
        {"trial": [0, 1], "arch_id": ["a", "b"], "spec": ['{"a": 1}', '{"b": 1}'],
         "latency_ms": [1.0, 2.0], "latency_stable": [True, True]}
    )  # fmt: skip
    final_ms = {"trial 0": 1.2, "trial 1": 2.9, "fcaformer_l1": 5.85}
    final = done.after(
        lambda job, payload: {n: {"latency_ms": ms, "rounds": 3} for n, ms in final_ms.items()},
        front,
    )
    # 1.2x stays unnamed; 1.45x too; 1/211x is named first
    assert [m["name"] for m in final["moved"]] == ["fcaformer_l1"]
    (moved,) = json.loads(done.final_json.read_text())["moved"]
    assert moved["ratio"] == pytest.approx(5.85 / 1233.9, rel=1e-3)
    assert moved["search_latency_stable"] is True
    line = summary_line(final)
    assert "fcaformer_l1 1.23e+03 -> 5.85 ms (in-search marked stable)" in line, line


def test_the_robust_cv_median_of_an_even_count_is_the_mean_of_the_middle_two():
    cvs = [0.01, 0.02, 0.04, 0.05]  # the line said 0.040
    models = [{"kind": "candidate", "final_latency_cv": c} for c in cvs]
    line = summary_line({"runtime": "eager", "rounds": 3, "models": models})
    assert "robust CV median 0.030 (max 0.050)" in line, line
