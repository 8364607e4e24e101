"""Options in a file, with or without --resume; what a resume keeps in run.yaml; a start that
stops leaves no folder; a space's measured limits apply only where it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fcasearch.cli import build_parser, main
from fcasearch.commands.search import resolve

_DRY = ["--objectives", "accuracy", "macs", "--no-measure", "--sampler", "random",
        "--budget", "dry=0.01"]  # fmt: skip


def _resolved(*argv: str):
    args = build_parser("search").parse_args(["search", *argv])
    return resolve(args)[0], args


def test_a_config_file_takes_the_long_options_as_keys(tiny_space, tmp_path):
    """``no_measure: true`` was 'unknown option; did you mean measure?', and --no-report could
    not be set from a file at all."""
    cfg = tmp_path / "search.yaml"
    cfg.write_text(
        f"space: {tiny_space}\nno-measure: true\nno_progress: true\nno_report: true\n"
        "objectives: [accuracy, macs]\nruntime_option: [pointwise_conv=false]\nn-trials: 3\n"
    )
    options, args = _resolved("--config", str(cfg))
    assert (options.measure, options.progress, args.no_report) == (False, False, True)
    assert options.runtime_kwargs == {"pointwise_conv": False} and options.n_trials == 3
    cfg.write_text(f"space: {tiny_space}\nno_measure: yes please\n")
    with pytest.raises(Exception, match="no_measure: give true or false"):
        _resolved("--config", str(cfg))


def test_a_config_given_to_a_resume_is_checked_like_the_command_line(
    tiny_space, search_args, tmp_path, capsys
):
    """It was read not at all: a seed in it changed nothing, without a word."""
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, *_DRY, "--n-trials", "2", "--seed", "3")) == 0
    cfg = tmp_path / "more.yaml"
    cfg.write_text(f"space: {tiny_space}\nseed: 3\nn_trials: 3\nout: elsewhere\n")
    capsys.readouterr()
    resume = ["search", "--resume", str(out), "--no-report", "--no-progress", "--config", str(cfg)]
    assert main(resume) == 0  # the same seed, and a total a resume may change
    assert len((out / "trials.jsonl").read_text().splitlines()) == 3
    cfg.write_text("seed: 4\n")
    assert main(resume) == 2
    assert "seed 3 -> 4" in capsys.readouterr().err


def test_a_plain_resume_goes_on_to_the_total_it_was_last_given(tiny_space, search_args, tmp_path):
    """run.yaml kept n_trials 2 after a resume to 4, so a later plain --resume (after a kill)
    ran 0 trials."""
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, *_DRY, "--n-trials", "2")) == 0
    resume = ["search", "--resume", str(out), "--no-report", "--no-progress"]
    assert main([*resume, "--n-trials", "3"]) == 0
    assert yaml.safe_load((out / "run.yaml").read_text())["options"]["n_trials"] == 3
    lines = (out / "trials.jsonl").read_text().splitlines()
    (out / "trials.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if killed in trial 2
    assert main([*resume, "--rebuild-study"]) == 0
    assert len((out / "trials.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("storage", ["sqlit:///x.db", "journal://{missing}/j.log"])
def test_a_start_that_stops_leaves_no_folder(storage, tiny_space, search_args, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    url = storage.format(missing=tmp_path / "no" / "such" / "dir")
    assert main(search_args(tiny_space, out, *_DRY, "--storage", url)) == 2
    assert capsys.readouterr().err.startswith("fcasearch search: error:")
    assert not out.exists()


def test_measured_limits_apply_only_on_their_device_and_batch(
    tiny_space, search_args, tmp_path, capsys
):
    """The limit was checked against figures of another batch size (or device), and the reason
    named the space's settings, not those measured."""
    space = tmp_path / "limited.yaml"
    text = tiny_space.read_text().replace(
        "constraints: {max_params: 200000}",
        "constraints: {max_params: 200000, max_latency_ms: 50, device: cpu, latency_batch_size: 4}",
    )
    space.write_text(text)
    argv = search_args(space, tmp_path / "run", "--objectives", "accuracy", "latency_ms",
                       "--n-trials", "1")  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "meant for cpu at batch 4" in err and "--latency-batch-size 4" in err, err
    assert not (tmp_path / "run").exists()
    assert main([*argv, "--latency-batch-size", "4"]) == 0


def test_run_yaml_records_the_data_accuracy_counts(tiny_space, search_args, tmp_path, capsys):
    """Nothing said what data the trials used but run.yaml's options (the printed output and the
    rows were silent, even with a subset)."""
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, "--n-trials", "1", "--objectives", "accuracy",
                            "macs", "--no-measure", "--subset-fraction", "0.5")) == 0  # fmt: skip
    data = yaml.safe_load((out / "run.yaml").read_text())["data"]
    assert data["name"] == "digits" and data["classes"] == 10
    assert data["val_images"] > 0 and data["train_images"] > data["val_images"]
    line = (
        f"data: digits: {data['train_images']} train / {data['val_images']} val images, "
        "10 classes (0.5 of each class)"
    )
    assert line in capsys.readouterr().err


def _image_folder(root):
    from PIL import Image

    for split, n in (("train", 6), ("val", 2)):
        for k, name in enumerate(("a", "b")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("L", (32, 32), color=40 * k + 10 * i).save(folder / f"{i}.png")
    return root


def test_a_relative_data_root_resumes_from_anywhere_and_may_move(
    tiny_space, search_args, tmp_path, monkeypatch
):
    """run.yaml kept data_root 'imgs' as given: a resume from another folder said it did not
    exist, and giving the new place was refused as a change of the run's search."""
    space = tmp_path / "two.yaml"
    text = tiny_space.read_text().replace("num_classes: 10", "num_classes: 2")
    space.write_text(text.replace("in_chans: 1", "in_chans: 3"))  # imagefolder images are RGB
    _image_folder(tmp_path / "work" / "imgs")
    monkeypatch.chdir(tmp_path / "work")
    out = tmp_path / "run"
    data = ["--data", "imagefolder", "--data-root", "imgs", "--objectives", "accuracy", "macs",
            "--no-measure"]  # fmt: skip
    assert main(search_args(space, out, *data, "--n-trials", "1")) == 0
    recorded = yaml.safe_load((out / "run.yaml").read_text())["options"]["data_root"]
    assert recorded == str(tmp_path / "work" / "imgs")
    monkeypatch.chdir(tmp_path)
    resume = ["search", "--resume", str(out), "--no-report", "--no-progress"]
    assert main([*resume, "--n-trials", "2"]) == 0
    (tmp_path / "work" / "imgs").rename(tmp_path / "moved")
    assert main([*resume, "--n-trials", "3", "--data-root", "moved"]) == 0
    assert len((out / "trials.jsonl").read_text().splitlines()) == 3
    # kept: a later plain resume (after a kill, say) finds the data where it was moved to
    assert main([*resume, "--n-trials", "4"]) == 0
    assert len((out / "trials.jsonl").read_text().splitlines()) == 4
    # another tree under the run's name: refused, nothing mixed
    other = _image_folder(tmp_path / "other")
    from PIL import Image

    Image.new("L", (32, 32)).save(other / "val" / "a" / "extra.png")
    assert main([*resume, "--n-trials", "5", "--data-root", str(other)]) == 2
    assert len((out / "trials.jsonl").read_text().splitlines()) == 4


def test_an_old_config_key_given_to_a_resume_is_checked_not_a_traceback(
    tiny_space, search_args, tmp_path, capsys
):
    """Keys of an earlier version (``pruner``, ``asha: true``) in --config with --resume gave
    KeyError tracebacks; they now read as they do in a new run's config."""
    out = tmp_path / "run"
    assert main(search_args(tiny_space, out, *_DRY, "--n-trials", "1")) == 0
    cfg = tmp_path / "old.yaml"
    cfg.write_text("pruner: median\nn_trials: 2\n")  # dropped, as in a new run
    argv = ["search", "--resume", str(out), "--no-report", "--no-progress", "--config", str(cfg)]
    assert main(argv) == 0
    assert len((out / "trials.jsonl").read_text().splitlines()) == 2
    cfg.write_text("asha: true\nn_trials: 3\n")  # scheduler asha: a change a resume refuses
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcasearch search: error:") and "asha" in err, err


def test_a_trial_timeout_no_trial_of_a_timed_budget_can_meet_is_refused():
    """--budget seconds=5 --trial-timeout 1 ran, and every trial failed on its timeout."""
    space = str(Path(__file__).resolve().parents[2] / "search_spaces" / "micro.yaml")
    with pytest.raises(Exception, match="would fail every trial"):
        _resolved("--space", space, "--budget", "seconds=5", "--trial-timeout", "1")
    # a budget that other limits may end first, or a timeout above it: accepted
    _resolved("--space", space, "--budget", "epochs=2,seconds=60", "--trial-timeout", "30")
    _resolved("--space", space, "--budget", "seconds=5", "--trial-timeout", "10")


def test_a_trial_that_fails_on_the_data_stops_the_search(tiny_space, search_args, tmp_path, capsys):
    """An unreadable image (text in a .png) failed every trial, and the search went on to the
    end with '0 complete, 4 failed'."""
    space = tmp_path / "two.yaml"
    text = tiny_space.read_text().replace("num_classes: 10", "num_classes: 2")
    space.write_text(text.replace("in_chans: 1", "in_chans: 3"))
    root = _image_folder(tmp_path / "imgs")
    (root / "train" / "b" / "z.png").write_text("not an image")  # not the first: built fine
    out = tmp_path / "run"
    argv = search_args(space, out, "--data", "imagefolder", "--data-root", str(root),
                       "--objectives", "accuracy", "macs", "--no-measure", "--n-trials", "4")  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "failed on the data, not its architecture" in err and "z.png" in err, err
    assert f"--resume {out}" in err
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["failed"]  # kept, and no trial after it
