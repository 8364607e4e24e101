"""A spec JSON or a run's trial fixes its input size and classes (both are part of its arch_id):
``fcasearch summary``, ``profile`` and ``export`` refuse other ``--img-size`` or ``--classes`` for
them alike (:func:`fcasearch.targets.resolve_model`), and registry names still take them."""

from __future__ import annotations

import argparse
import csv

import pytest

from fcasearch.cli import build_parser, main
from fcasearch.commands import profile as profile_cmd
from fcasearch.commands import summary as summary_cmd
from fcasearch.models import get_spec
from fcasearch.storage import RunDir, TrialLog
from fcasearch.targets import resolve_model

FAST = ["--warmup", "1", "--max-repeats", "5", "--max-seconds", "0.2", "--retries", "0"]
SPEC = get_spec("fcaformer_nano", img_size=32, in_chans=1, num_classes=10)


def _summary(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    summary_cmd.add_arguments(parser)
    return summary_cmd.run(parser.parse_args(argv))


def _profile(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    profile_cmd.add_arguments(parser)
    return profile_cmd.run(parser.parse_args(argv))


@pytest.fixture(params=["run", "file", "text"])
def fixed(request, tmp_path) -> str:
    """MODEL naming SPEC in each form that fixes its input."""
    if request.param == "run":
        run = RunDir(tmp_path / "run")
        row = {"trial": 0, "arch_id": SPEC.arch_id, "spec": SPEC.to_json(), "status": "complete"}
        TrialLog(run).append(row)
        return f"{run.root}:{SPEC.arch_id}"
    if request.param == "file":
        (tmp_path / "cand.json").write_text(SPEC.to_json())
        return str(tmp_path / "cand.json")
    return SPEC.to_json()


@pytest.mark.parametrize(
    "option, value, said",
    [
        ("--img-size", "64", "--img-size 64"),
        ("--img-size", "32x48", "--img-size 32x48"),
        ("--classes", "7", "--classes 7"),
    ],
)
def test_summary_refuses_another_input_for_a_spec_that_fixes_it(fixed, capsys, option, value, said):
    assert _summary([fixed, option, value]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no summary of another architecture
    assert captured.err.startswith(f"error: {said}: ")
    assert "applies to registry and reference models only" in captured.err
    assert _summary([fixed, "--img-size", "32", "--classes", "10"]) == 0  # its own: fine
    assert f"arch_id {SPEC.arch_id}" in capsys.readouterr().out


def test_summary_of_a_registry_name_takes_any_size_and_classes(capsys):
    assert _summary(["fcaformer_nano", "--img-size", "64", "--classes", "7"]) == 0
    want = get_spec("fcaformer_nano", img_size=64, num_classes=7)
    assert f"arch_id {want.arch_id}" in capsys.readouterr().out


@pytest.mark.parametrize("option, value", [("--img-size", "64"), ("--classes", "7")])
def test_profile_refuses_another_input_for_a_spec_that_fixes_it(
    fixed, tmp_path, capsys, option, value
):
    out = tmp_path / "p.csv"
    argv = [fixed, "--no-memory", "--no-energy", *FAST, "--out", str(out)]
    assert _profile([*argv, option, value]) == 2 and not out.exists()
    err = capsys.readouterr().err
    assert f"{option} {value}: " in err and "registry and reference models only" in err
    assert _profile([*argv, "--img-size", "32", "--classes", "10"]) == 0
    (row,) = csv.DictReader(out.open())
    assert row["arch_id"] == SPEC.arch_id and row["img_size"] == "32x32"


def test_one_check_for_all_three_commands(fixed):
    assert resolve_model(fixed, img_size=32, num_classes=10).spec == SPEC
    assert resolve_model(fixed, img_size=(32, 32)).spec == SPEC
    for kwargs in ({"img_size": 64}, {"img_size": (32, 48)}, {"num_classes": 7}):
        with pytest.raises(ValueError, match="fixes its"):
            resolve_model(fixed, **kwargs)
    # registry and reference models are built at what is asked
    assert resolve_model("fcaformer_nano", img_size=64, num_classes=7).spec == get_spec(
        "fcaformer_nano", img_size=64, num_classes=7
    )
    assert resolve_model("convnext_tiny", img_size=64, num_classes=7).baseline == "convnext_tiny"


def test_export_refuses_it_too(fixed, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main(["export", fixed, "--img-size", "64", "--out", str(out)]) == 2
    assert "--img-size 64: " in capsys.readouterr().err and not out.exists()


def test_summary_help_says_what_model_and_the_defaults_are(capsys):
    from fcasearch.cli import COMMANDS

    assert "RUN_DIR:ARCH_ID" in COMMANDS["summary"][1] and "FcaFormer" in COMMANDS["summary"][1]
    with pytest.raises(SystemExit):
        build_parser("summary").parse_args(["summary", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "RUN_DIR:ARCH_ID" in text and "FcaFormer models only" in text
    classes = text[text.index("--classes CLASSES") :]
    assert "fixes its own, and another is refused" in classes
