"""What a report is given: runs on other data or budgets, runs without a finished trial, a
profile's JSON, and a history with nothing in it."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from fcasearch.report import MixedBudgetError, MixedDataError, NoTrialsError, build_report
from fcasearch.report.references import profile_references, read_profile

DIGITS = {"name": "digits", "classes": 10, "train_images": 1438, "val_images": 359}


def _record(run, *, data=None, budget=None, block=None, **options):
    """Write into the run's run.yaml what a search records of its data and budget."""
    config = yaml.safe_load((run / "run.yaml").read_text())
    opts = {"data": data, "subset_classes": None, "subset_fraction": None, "budget": budget}
    config["options"] = {**opts, **options}
    config["budget"] = budget
    if block is not None:
        config["data"] = block
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


def test_runs_on_other_data_are_refused_naming_each_runs_data(make_run, report_cli, capsys):
    digits = _record(make_run("on-digits"), data="digits", budget="epochs=2", block=DIGITS)
    cifar = _record(make_run("on-cifar", seed=1), data="cifar10", budget="epochs=2")
    with pytest.raises(MixedDataError) as err:
        build_report([digits, cifar], figures=False)
    message = str(err.value)
    for needle in ("on-digits: digits, 1438/359 train/val images", "on-cifar: cifar10",
                   "--allow-mixed-data", "accuracy"):  # fmt: skip
        assert needle in message, message
    assert report_cli(["report", str(digits), str(cifar), "--no-figures"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # one line, no traceback
    # a subset of the same dataset is other data too
    tenth = _record(
        make_run("tenth", seed=2), data="digits", budget="epochs=2", subset_fraction=0.1
    )
    with pytest.raises(MixedDataError, match=r"tenth: digits \(0.1 of each class\)"):
        build_report([digits, tenth], figures=False)
    # and so are other image counts under one name (another ImageFolder tree, say)
    fewer = _record(
        make_run("fewer", seed=3), data="digits", budget="epochs=2",
        block={**DIGITS, "train_images": 700, "val_images": 175},
    )  # fmt: skip
    with pytest.raises(MixedDataError, match="700/175 train/val images"):
        build_report([digits, fewer], figures=False)
    # allowed: reported, with a note
    paths = build_report([digits, cifar], figures=False, allow_mixed_data=True)
    notes = json.loads(paths.summary_json.read_text())["notes"]
    assert any(n.startswith("Mixed data allowed by the user") and "cifar10" in n for n in notes)


def test_runs_with_other_budgets_are_refused(make_run, report_cli, capsys, tmp_path):
    epoch = _record(make_run("one-epoch"), data="digits", budget="epochs=1")
    steps = _record(make_run("five-steps", seed=1), data="digits", budget="steps=5")
    with pytest.raises(MixedBudgetError) as err:
        build_report([epoch, steps], figures=False)
    message = str(err.value)
    for needle in ("one-epoch: epochs=1 (1 epoch)", "five-steps: steps=5 (5 steps)",
                   "--allow-mixed-budgets"):  # fmt: skip
        assert needle in message, message
    out = tmp_path / "mixed"
    args = ["report", str(epoch), str(steps), "--no-figures", "--out", str(out)]
    assert report_cli(args) == 2
    assert report_cli([*args, "--allow-mixed-budgets"]) == 0
    assert "Mixed budgets allowed by the user" in (out / "report.md").read_text()


def test_runs_that_record_no_data_or_budget_are_not_refused(make_run):
    old = make_run("old")  # written before run.yaml recorded data and budget
    new = _record(make_run("new", seed=1), data="cifar10", budget="steps=5")
    paths = build_report([old, new], figures=False)
    notes = " ".join(json.loads(paths.summary_json.read_text())["notes"])
    assert "Run(s) old record no dataset or training budget" in notes
    build_report([old, make_run("older", seed=2)], figures=False)


def test_a_fraction_of_one_is_every_image_as_no_fraction_is(make_run):
    every = _record(make_run("every"), data="digits", budget="epochs=2", block=DIGITS)
    whole = _record(
        make_run("whole", seed=1), data="digits", budget="epochs=2", block=DIGITS,
        subset_fraction=1.0,
    )  # fmt: skip
    paths = build_report([every, whole], figures=False)
    assert "Mixed data" not in paths.markdown.read_text()
    half = _record(make_run("half", seed=2), data="digits", budget="epochs=2", subset_fraction=0.5)
    with pytest.raises(MixedDataError, match=r"half: digits \(0.5 of each class\)"):
        build_report([whole, half], figures=False)


def test_an_imagefolder_is_known_by_its_counts_where_recorded_else_by_its_path(make_run):
    tree = {"name": "imagefolder", "classes": 3, "train_images": 120, "val_images": 30}

    def folder(label, seed, root, block):
        run = make_run(label, seed=seed)
        return _record(run, data="imagefolder", budget="epochs=2", block=block, data_root=root)

    here = folder("here", 0, "/data/flowers", tree)
    moved = folder("moved", 1, "/mnt/other/flowers", tree)  # the same tree, mounted elsewhere
    text = build_report([here, moved], figures=False).markdown.read_text()
    assert "Mixed data" not in text
    assert "imagefolder at /mnt/other/flowers" in text  # the path is still shown
    other = folder("other", 2, "/data/flowers", {**tree, "train_images": 90})
    with pytest.raises(MixedDataError, match="90/30 train/val images"):
        build_report([here, other], figures=False)
    # runs that record no counts: the path is all there is to tell their trees apart
    old = folder("old", 3, "/data/flowers", None)
    elsewhere = folder("elsewhere", 4, "/data/birds", None)
    with pytest.raises(MixedDataError, match="elsewhere: imagefolder at /data/birds"):
        build_report([old, elsewhere], figures=False)
    build_report([old, folder("same", 5, "/data/flowers", None)], figures=False)


def test_the_subtitle_names_the_data_and_budget(make_run, tmp_path):
    run = _record(make_run("sub"), data="digits", budget="epochs=2", block=DIGITS)
    text = build_report(run, tmp_path / "r", figures=False).markdown.read_text()
    subtitle = text.splitlines()[2]
    assert "data: digits, 1438/359 train/val images, 2 epochs" in subtitle, subtitle
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["runs"][0]["trained_on"] == "digits, 1438/359 train/val images, 2 epochs"


@pytest.mark.parametrize("journal", [None, "", '{"trial": 0, "status": "comp'])
def test_a_run_without_a_finished_trial_says_so(make_run, report_cli, capsys, journal):
    """Killed before its first trial ended: run.yaml and study.db (and perhaps a journal with
    no complete line). The report says so, not that this is no results directory."""
    run = make_run("killed")
    for name in ("trials.parquet", "trials.csv"):
        (run / name).unlink()
    (run / "study.db").write_bytes(b"")
    if journal is not None:
        (run / "trials.jsonl").write_text(journal)
    with pytest.raises(NoTrialsError):
        build_report(run, figures=False)
    assert report_cli(["report", str(run), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "the run has no finished trial yet" in err[0] and f"--resume {run}" in err[0]
    assert "is this a results directory" not in err[0]


def _profile_rows() -> list[dict]:
    """Two rows as `fcasearch profile` makes them: one at the runs' input, one ran out of memory."""
    from fcasearch.measure.profile import PROFILE_COLUMNS

    fingerprint = {"cpu_model": "AMD EPYC 7B13 64-Core Processor", "threads": 2, "gpu_name": None}
    base = dict.fromkeys(PROFILE_COLUMNS, "")
    base.update(model="convnext_tiny", batch_size=1, dtype="fp32", img_size="32x32",
                num_classes=10, device="cpu", runtime="eager", runtime_options="", threads=2,
                params=2.8e7, macs=9.1e7, latency_ms=3.0, peak_mem_mb=40.0,
                energy_mj_per_image=math.nan, avg_power_w=math.nan, latency_stable=True,
                latency_attempts=1, status="ok", measure_seconds=1.5,
                fingerprint_id="3f9a0c1d2e4b", fingerprint=json.dumps(fingerprint))  # fmt: skip
    oom = {**base, "batch_size": 64, "latency_ms": math.nan, "peak_mem_mb": math.nan,
           "latency_stable": None, "status": "oom", "reason": "out of memory"}  # fmt: skip
    return [base, oom]


def test_a_profile_json_reads_as_its_csv(make_run, tmp_path, report_cli):
    from fcasearch.measure.profile import write_profile

    csv_path, json_path = write_profile(_profile_rows(), tmp_path / "p.csv")
    from_csv, from_json = read_profile(csv_path), read_profile(json_path)
    assert list(from_json.columns) == list(from_csv.columns)
    args = (["3f9a0c1d2e4b"], 1)
    table_csv, notes_csv = profile_references(csv_path, *args, input_size=((32, 32), 10))
    table_json, notes_json = profile_references(json_path, *args, input_size=((32, 32), 10))
    pd.testing.assert_frame_equal(table_json, table_csv, check_dtype=False)
    assert table_json["latency_ms"].tolist() == [3.0] and notes_json == notes_csv
    run = make_run("prof")
    paths = build_report(run, tmp_path / "r", profile=json_path, figures=False)
    notes = " ".join(json.loads(paths.summary_json.read_text())["notes"])
    assert "convnext_tiny omitted" not in notes
    assert report_cli(["report", str(run), "--profile", str(json_path), "--no-figures"]) == 0


def test_a_file_that_is_no_profile_says_to_give_the_csv(make_run, tmp_path, report_cli, capsys):
    run = make_run("prof")
    bad = tmp_path / "p.txt"
    bad.write_text('[\n {\n  "model": "x",\n  "batch_size": 1\n }\n]\n')  # JSON, not a CSV
    assert report_cli(["report", str(run), "--profile", str(bad), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "not a profile CSV" in err and "give the .csv" in err and "Traceback" not in err
    broken = tmp_path / "p.json"
    broken.write_text('{"model": ')
    with pytest.raises(ValueError, match="not a profile JSON"):
        read_profile(broken)


def test_no_history_figure_without_a_complete_trial(make_run, tmp_path):
    run = make_run("rejected", n=4, statuses={"infeasible": 4})
    out = tmp_path / "r"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "hypervolume_history.png").write_bytes(b"an earlier report's figure")
    paths = build_report(run, out)
    assert "hypervolume_history.png" not in {p.name for p in paths.figures}
    assert not (out / "figures" / "hypervolume_history.png").exists()
    assert "hypervolume_history" not in paths.markdown.read_text()
    assert "hypervolume_history" not in paths.html.read_text()
