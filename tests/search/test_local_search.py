from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
import yaml

from fcasearch.cli import main
from fcasearch.search.options import SearchOptions
from fcasearch.search.runner import run_search
from fcasearch.space import load_space


def _frame(run):
    return pd.read_parquet(run / "trials.parquet")


def _tiny_options(space, tmp_path, **overrides) -> SearchOptions:
    """Options of a short in-process search on the tiny space: no measurement, no bar."""
    base = dict(
        space=str(space),
        objectives="accuracy macs",
        budget="steps=2",
        batch_size=32,
        out=str(tmp_path / "run"),
        progress=False,
        measure=False,
    )
    return SearchOptions(**{**base, **overrides})


def test_tiny_local_search_end_to_end(tiny_space, search_args, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            search_args(
                tiny_space,
                out,
                "--n-trials",
                "6",
                "--objectives",
                "accuracy:max",
                "macs:min",
                "latency_ms:min",
            )
        )
        == 0
    )
    df = _frame(out)
    assert len(df) == 6 and set(df["trial"]) == set(range(6))
    assert set(df["status"]) <= {"complete", "pruned"}
    done = df[df["status"] == "complete"]
    assert done["accuracy"].between(0, 1).all()
    assert (done["latency_ms"] > 0).all() and (done["macs"] > 0).all()
    # every row names its architecture and hardware
    assert df["arch_id"].str.fullmatch(r"[0-9a-f]{12}").all()
    assert df["fingerprint_id"].str.len().eq(12).all()
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert [o["name"] for o in run["objectives"]] == ["accuracy", "macs", "latency_ms"]
    assert run["fingerprint"]["cpu_model"] and run["versions"]["optuna"] == optuna.__version__
    assert (out / "trials.csv").exists() and (out / "pareto.csv").exists()
    # a plain Optuna study that optuna.load_study can read
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 6
    assert all(t.user_attrs["arch_id"] in set(df["arch_id"]) for t in study.trials)
    # every trial asks the parameters its architecture uses (define-by-run)
    space = load_space(tiny_space)
    assert all(
        t.params.keys() == space.to_params(space.from_params(t.params)).keys() for t in study.trials
    )
    assert all(space.from_params(t.params).arch_id == t.user_attrs["arch_id"] for t in study.trials)
    pareto = pd.read_csv(out / "pareto.csv")
    assert 1 <= len(pareto) <= len(done)


def test_dedupe_by_arch_id_reuses_results(tiny_space, search_args, tmp_path):
    out = tmp_path / "run"
    # the space has 4 networks: 8 trials must repeat some, and repeats are not retrained
    assert (
        main(
            search_args(
                tiny_space,
                out,
                "--n-trials",
                "8",
                "--objectives",
                "accuracy",
                "macs",
                "--sampler",
                "random",
                "--no-measure",
            )
        )
        == 0
    )
    df = _frame(out)
    notes = df["notes"].fillna("{}").map(json.loads)
    reused = df[notes.map(lambda n: "reused_from_trial" in n)]
    assert df["arch_id"].nunique() <= 4 and len(reused) == len(df) - df["arch_id"].nunique()
    for _, row in reused.iterrows():
        src = df[df["trial"] == int(json.loads(row["notes"])["reused_from_trial"])].iloc[0]
        assert src["arch_id"] == row["arch_id"] and src["accuracy"] == row["accuracy"]
        assert row["train_seconds"] == 0


def test_constraint_rejection_builds_no_model(tiny_space, search_args, tmp_path, monkeypatch):
    import fcasearch.models as models

    built = []
    real = models.build_model
    monkeypatch.setattr(models, "build_model", lambda spec: built.append(spec) or real(spec))
    space = yaml.safe_load(tiny_space.read_text())
    space["constraints"] = {"max_params": 1000}  # every member is larger
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "run"
    assert main(search_args(path, out, "--n-trials", "3", "--objectives", "accuracy", "macs")) == 0
    df = _frame(out)
    assert (df["status"] == "infeasible").all() and df["reason"].str.contains("params").all()
    assert built == []
    assert df["params"].gt(1000).all() and df["accuracy"].isna().all()
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    assert all(t.constraints["space"] > 0 for t in study.trials)


def test_a_trial_that_raises_does_not_stop_the_search(tiny_space, tmp_path, monkeypatch):
    import fcasearch.models as models

    real = models.build_model

    def flaky(spec):
        if spec.stages[3].width == 32:
            raise RuntimeError("boom: simulated crash in model construction")
        return real(spec)

    monkeypatch.setattr(models, "build_model", flaky)
    outcome = run_search(_tiny_options(tiny_space, tmp_path, n_trials=6, sampler="random", seed=3))
    df = _frame(outcome.run.root)
    assert len(df) == 6
    failed = df[df["status"] == "failed"]
    assert len(failed) >= 1 and failed["reason"].str.contains("boom").all()
    assert (df[df["status"] != "failed"]["arch.widths"].str.endswith("-16")).all()


def test_existing_run_needs_resume(tiny_space, search_args, tmp_path):
    out = tmp_path / "run"
    args = search_args(tiny_space, out, "--n-trials", "1", "--objectives", "macs", "--no-measure")
    assert main(args) == 0
    assert main(args) == 2  # refuses to overwrite; says to pass --resume


def test_resume_refuses_settings_that_change_what_trials_measure(
    tiny_space, search_args, tmp_path, capsys
):
    out = tmp_path / "run"
    args = search_args(tiny_space, out, "--n-trials", "1", "--objectives", "macs", "--no-measure")
    assert main(args) == 0
    resume = ["search", "--resume", str(out), "--no-progress", "--no-report"]
    assert main([*resume, "--budget", "steps=9", "--sampler", "random"]) == 2
    err = capsys.readouterr().err
    assert "budget 'steps=3' -> 'steps=9'" in err and "another --out" in err
    assert "sampler (the default) -> 'random'" in err  # not '' -> 'random'
    # the same values again, and what may change (length, resources), are accepted
    assert main([*resume, "--budget", "steps=3", "--n-trials", "2", "--cpus-per-trial", "2"]) == 0
    assert len(_frame(out)) == 2


def test_search_builds_its_report(tiny_space, search_args, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        a
        for a in search_args(tiny_space, out, "--n-trials", "3", "--objectives", "accuracy", "macs")
        if a != "--no-report"
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    listed = printed.split("results: ")[1].splitlines()[0]  # the files the run has, by name
    assert all(name in listed for name in ("trials.jsonl", "pareto.csv", "study.db", "run.yaml"))
    assert "final.json" not in listed and not (out / "final.json").exists()  # nothing timed
    html = out / "report" / "index.html"
    assert str(html) in printed and html.exists() and (out / "report" / "report.md").exists()
    page = html.read_text()
    assert "data:image/png;base64" in page
    for arch_id in pd.read_csv(out / "pareto.csv")["arch_id"]:
        assert arch_id in page


def test_data_that_does_not_fit_the_space_fails_before_any_trial(
    tiny_space, search_args, tmp_path, capsys
):
    space = yaml.safe_load(tiny_space.read_text())
    space["num_classes"] = 5  # digits has 10
    path = tmp_path / "five.yaml"
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "run"
    assert main(search_args(path, out, "--n-trials", "2", "--objectives", "accuracy", "macs")) == 2
    err = capsys.readouterr().err
    assert "5 classes" in err and "'digits'" in err and "num_classes" in err
    assert not (out / "run.yaml").exists()


def test_same_seed_same_search(tiny_space, search_args, tmp_path):
    frames = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert (
            main(
                search_args(
                    tiny_space,
                    out,
                    "--n-trials",
                    "3",
                    "--objectives",
                    "accuracy",
                    "macs",
                    "--no-measure",
                    "--seed",
                    "7",
                )
            )
            == 0
        )
        frames.append(_frame(out))
    a, b = frames
    assert list(a["arch_id"]) == list(b["arch_id"])
    assert a["accuracy"].tolist() == b["accuracy"].tolist()


def test_storage_url_and_study_name_are_honoured(tiny_space, search_args, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"  # any SQLAlchemy URL; PostgreSQL on a cluster
    out = tmp_path / "run"
    args = [
        "--n-trials",
        "2",
        "--objectives",
        "macs",
        "--no-measure",
        "--storage",
        url,
        "--study-name",
        "shared",
    ]
    assert main(search_args(tiny_space, out, *args)) == 0
    assert not (out / "study.db").exists()
    study = optuna.load_study(study_name="shared", storage=url)
    assert len(study.trials) == 2
    assert yaml.safe_load((out / "run.yaml").read_text())["options"]["storage"] == url


def test_zero_cost_proxy_objective_trains_nothing(tiny_space, search_args, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            search_args(
                tiny_space,
                out,
                "--n-trials",
                "3",
                "--objectives",
                "proxy.naswot:max",
                "macs:min",
                "--no-measure",
            )
        )
        == 0
    )
    df = _frame(out)
    assert (df["status"] == "complete").all() and df["proxy.naswot"].notna().all()
    assert (df["train_seconds"] == 0).all() and df["accuracy"].isna().all()


def test_a_trial_is_marked_with_its_arch_id_before_it_runs(tiny_space, tmp_path, monkeypatch):
    import fcasearch.search.local as local

    seen = []
    real = local.evaluate

    def evaluate(spec, ctx, report):
        storage = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
        running = optuna.load_study(study_name="run", storage=storage).get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
        )
        seen.append([t.user_attrs.get("arch_id") for t in running] == [spec.arch_id])
        return real(spec, ctx, report)

    monkeypatch.setattr(local, "evaluate", evaluate)
    run_search(_tiny_options(tiny_space, tmp_path, n_trials=3, budget="steps=1", sampler="nsga2"))
    assert seen and all(seen)


@pytest.mark.gpu
def test_cuda_search_times_candidates_as_cuda_graphs(tiny_space, search_args, tmp_path):
    out = tmp_path / "run"
    args = ["--n-trials", "2", "--objectives", "latency_ms:min", "macs:min", "--device", "cuda"]
    assert main(search_args(tiny_space, out, *args, "--latency-cuda-graph")) == 0
    df = _frame(out)
    assert (df["status"] == "complete").all() and df["latency_ms"].gt(0).all()
    notes = df["notes"].map(json.loads)
    assert notes.map(lambda n: "CUDA graph replay" in n["measure.latency"]).all()
