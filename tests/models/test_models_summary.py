"""``fcasearch summary``: per-stage table, params check against count_params."""

from __future__ import annotations

import argparse
import json

from fcasearch.commands import summary
from fcasearch.measure.counting import count_params
from fcasearch.models import get_spec


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    summary.add_arguments(parser)
    return summary.run(parser.parse_args(argv))


def test_summary_of_a_registry_name(capsys):
    assert _run(["fcaformer_l1"]) == 0
    out = capsys.readouterr().out
    spec = get_spec("fcaformer_l1")
    assert f"arch_id {spec.arch_id}" in out and spec.short() in out
    assert "6,187,560" in out and "params check: model == count_params(spec)" in out
    assert "stage2 fca d192x6 h6" in out and "14x14" in out and "1,374,297,280" in out


def test_summary_of_a_json_spec_and_of_a_registry_name_with_overrides(capsys, tmp_path):
    spec = get_spec("fcaformer_nano", img_size=64)
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    assert _run([str(path)]) == 0 and "spec    64 " in capsys.readouterr().out
    # a spec fixes its own input (part of its arch_id): another one is refused, not rebuilt
    assert _run([str(path), "--img-size", "96x64"]) == 2
    assert "fixes its input size" in capsys.readouterr().err
    assert _run(["fcaformer_nano", "--img-size", "96x64", "--classes", "7"]) == 0
    out = capsys.readouterr().out
    want = get_spec("fcaformer_nano", img_size=(96, 64), num_classes=7)
    assert f"{count_params(want):,}" in out and "96x64" in out
    assert _run([json.dumps(spec.to_dict())]) == 0


def test_summary_rejects_bad_input(capsys):
    assert _run(["fcaformer_l1", "--img-size", "100"]) == 2
    assert "img_size" in capsys.readouterr().err
    assert _run(["no_such_model"]) == 2
    assert "fcaformer_l1" in capsys.readouterr().err


def test_summary_resolves_names_as_export_does(capsys, tmp_path):
    from fcasearch.storage import RunDir, TrialLog

    assert _run(["y" * 300]) == 2  # cannot be a file name: a user error, not an OSError
    assert "is not a registry model" in capsys.readouterr().err
    assert _run(["swin_t"]) == 2
    assert "reference model, not an FcaFormer spec" in capsys.readouterr().err
    spec = get_spec("fcaformer_nano", img_size=32, in_chans=1, num_classes=10)
    run = RunDir(tmp_path / "run")
    TrialLog(run).append(
        {"trial": 0, "arch_id": spec.arch_id, "spec": spec.to_json(), "status": "complete"}
    )
    assert _run([f"{run.root}:{spec.arch_id}"]) == 0
    assert f"arch_id {spec.arch_id}" in capsys.readouterr().out
