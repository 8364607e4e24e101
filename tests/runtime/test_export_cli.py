"""``fcasearch export``: registry name, spec JSON (file and text), RUN_DIR:ARCH_ID with the weights
a search saved; the file is verified with ONNX Runtime, failures exit non-zero with the reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fcasearch.cli import main
from fcasearch.commands import export as export_cmd
from fcasearch.models import build_model, fuse_for_inference, get_spec
from fcasearch.runtime.onnx import onnx_session
from fcasearch.spec import ArchSpec
from fcasearch.storage import RunDir, TrialLog
from fcasearch.targets import resolve_model

TINY_SPACE = """\
name: tiny
img_size: 32
in_chans: 1
num_classes: 10
conv_stages: 2
defaults: {head_dim: 8, mlp_ratio: 2}
stages:
  - {depth: 1, width: 8}
  - {depth: 1, width: 16}
  - {depth: 2, width: 16}
  - {depth: 1, width: 16}
"""


def _onnx_logits(path, x: torch.Tensor) -> np.ndarray:
    session = onnx_session(path)
    return session.run(["logits"], {"images": x.numpy()})[0]


def _folded(spec: ArchSpec, state: dict | None = None) -> torch.nn.Module:
    model = build_model(spec)
    if state is not None:
        model.load_state_dict(state)
    return fuse_for_inference(model)


def test_registry_name(tmp_path, capsys):
    out = tmp_path / "nano.onnx"
    argv = ["export", "fcaformer_nano", "--img-size", "32", "--format", "onnx", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert (
        f"exported fcaformer_nano (arch_id {get_spec('fcaformer_nano', img_size=32).arch_id})"
        in text
    )
    assert "verified with ONNX Runtime" in text and "max abs diff vs eager" in text
    assert "dynamo exporter" in text and out.is_file()
    # fresh weights: BN calibrated first, so the file's logits have a scale the check can see
    assert "BN statistics calibrated on random inputs" in text
    logits = _onnx_logits(out, torch.randn(1, 3, 32, 32))
    assert np.abs(logits).max() > 1e-2


@pytest.mark.parametrize("as_file", [True, False])
def test_spec_json_file_or_text(tmp_path, capsys, as_file):
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=4, in_chans=1)
    model_arg = spec.to_json()
    if as_file:
        (tmp_path / "cand.json").write_text(model_arg)
        model_arg = str(tmp_path / "cand.json")
    out = tmp_path / "sub" / "cand.onnx"
    argv = ["export", model_arg, "--out", str(out), "--exporter", "torchscript", "--dynamic-batch"]
    assert main(argv) == 0
    assert "batch free" in capsys.readouterr().out
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        want = _folded(spec)(x)
    # freshly initialised weights are random: the file is checked for its shape, batch 3 included
    assert _onnx_logits(out, x).shape == tuple(want.shape) == (3, 4)


@pytest.mark.slow
def test_run_dir_and_arch_id_use_the_weights_the_search_saved(tmp_path, capsys):
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    run_dir = tmp_path / "run"
    search = [
        "search", "--space", str(space), "--out", str(run_dir), "--n-trials", "1",
        "--budget", "steps=3", "--batch-size", "32", "--threads", "1", "--no-progress",
        "--no-report", "--objectives", "accuracy:max", "macs:min", "--no-measure",
        "--save-weights",
    ]  # fmt: skip
    assert main(search) == 0
    (row,) = TrialLog(RunDir(run_dir)).rows()
    arch_id = row["arch_id"]
    weights = run_dir / "weights" / f"{arch_id}.pt"
    assert weights.is_file()
    state = torch.load(weights, weights_only=True)
    spec = ArchSpec.from_json(row["spec"])
    assert not all(  # trained: not the initial weights
        torch.equal(v, build_model(spec).state_dict()[k]) for k, v in state.items()
    )
    out = tmp_path / "trial.onnx"
    capsys.readouterr()
    assert main(["export", f"{run_dir}:{arch_id}", "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert f"weights {weights}" in text.out and "warning" not in text.err
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        want = _folded(spec, state)(x).numpy()
    np.testing.assert_allclose(_onnx_logits(out, x), want, rtol=1e-3, atol=1e-4)


def test_run_dir_without_saved_weights_warns(tmp_path, capsys):
    spec = get_spec("fcaformer_nano", img_size=32, in_chans=1, num_classes=10)
    run = RunDir(tmp_path / "run")
    TrialLog(run).append(
        {"trial": 0, "arch_id": spec.arch_id, "spec": spec.to_json(), "status": "complete"}
    )
    target = resolve_model(f"{run.root}:{spec.arch_id}")
    assert target.spec == spec and target.weights is None and "--save-weights" in target.note
    with pytest.raises(ValueError, match="no trial of arch_id 'abc'"):
        resolve_model(f"{run.root}:abc")


def test_weights_file_loaded_and_checked(tmp_path):
    spec = get_spec("fcaformer_nano", img_size=32)
    model = build_model(spec)
    path = tmp_path / "w.pt"
    torch.save({"model": model.state_dict()}, path)
    fresh = build_model(spec)
    assert export_cmd.load_weights(fresh, path) == f"weights {path}"
    assert all(
        torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values())
    )
    torch.save({"head.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="does not fit the model"):
        export_cmd.load_weights(build_model(spec), path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no_such_model"], "is not a registry model"),
        (['{"stages": []}'], "not a valid spec JSON"),
        (["missing.json"], "does not exist"),
        (["fcaformer_nano", "--batch-size", "0"], "--batch-size 0"),
    ],
)
def test_user_errors_exit_2_with_the_reason(tmp_path, capsys, argv, message):
    assert main(["export", *argv, "--out", str(tmp_path / "x.onnx")]) == 2
    assert message in capsys.readouterr().err


def test_mismatched_weights_exit_2(tmp_path, capsys):
    path = tmp_path / "w.pt"
    torch.save({"head.weight": torch.zeros(2, 2)}, path)
    code = main(
        [
            "export",
            "fcaformer_nano",
            "--img-size",
            "32",
            "--weights",
            str(path),
            "--out",
            str(tmp_path / "x.onnx"),
        ]
    )
    assert code == 2 and "does not fit the model" in capsys.readouterr().err


def test_a_file_that_does_not_match_exits_1(tmp_path, capsys, monkeypatch):
    import fcasearch.runtime.onnx as onnx_mod
    from fcasearch.runtime import UnsupportedModel

    def mismatch(*args, **kwargs):
        raise UnsupportedModel("onnxruntime: outputs differ from eager by up to 3 (tolerance 1e-4)")

    monkeypatch.setattr(onnx_mod, "verify_onnx", mismatch)
    out = tmp_path / "x.onnx"
    argv = [
        "export",
        "fcaformer_nano",
        "--img-size",
        "32",
        "--exporter",
        "torchscript",
        "--out",
        str(out),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "does not match the model" in err and "differ from eager" in err


def test_cli_lists_export():
    from fcasearch.cli import COMMANDS

    assert "export" in COMMANDS
    assert json.dumps(COMMANDS["export"])


def _logged_run(tmp_path, spec: ArchSpec, **row) -> RunDir:
    run = RunDir(tmp_path / "run")
    entry = {"trial": 0, "arch_id": spec.arch_id, "spec": spec.to_json(), "status": "complete"}
    TrialLog(run).append({**entry, **row})
    return run


def test_a_trial_the_search_found_infeasible_is_exported_with_a_warning(tmp_path, capsys):
    spec = get_spec("fcaformer_nano", img_size=32, in_chans=1, num_classes=10)
    reason = "params 98,969 > max_params 40,000"
    run = _logged_run(tmp_path, spec, status="infeasible", reason=reason)
    out = tmp_path / "x.onnx"
    argv = ["export", f"{run.root}:{spec.arch_id}", "--exporter", "torchscript", "--out", str(out)]
    assert main(argv) == 0 and out.is_file()
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "infeasible" in line]
    assert warning.startswith("warning:") and reason in warning and "anyway" in warning


@pytest.mark.parametrize("kind", ["run", "text", "file"])
def test_img_size_other_than_the_specs_own_is_refused(tmp_path, capsys, kind):
    spec = get_spec("fcaformer_nano", img_size=32, in_chans=1, num_classes=10)
    if kind == "run":
        model_arg = f"{_logged_run(tmp_path, spec).root}:{spec.arch_id}"
    elif kind == "text":
        model_arg = spec.to_json()
    else:
        model_arg = str(tmp_path / "spec.json")
        (tmp_path / "spec.json").write_text(spec.to_json())
    out = tmp_path / "x.onnx"
    argv = ["export", model_arg, "--exporter", "torchscript", "--out", str(out)]
    assert main([*argv, "--img-size", "64"]) == 2 and not out.exists()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--img-size 64" in line and "32x32" in line and "registry and reference models" in line
    assert main([*argv, "--img-size", "32"]) == 0  # the spec's own size: nothing to refuse
    assert "(batch 1, 1, 32, 32)" in capsys.readouterr().out


def test_long_or_odd_model_names_are_user_errors(tmp_path, capsys):
    out = str(tmp_path / "x.onnx")
    for name in ("x" * 300, "run:" + "y" * 300, "a\tb\nc"):
        assert main(["export", name, "--out", out]) == 2
        err = capsys.readouterr().err
        assert "is not a registry model" in err and "Traceback" not in err
        assert len(err) < 600  # the name is cut short in the message
    # a long spec JSON text is a spec, never a file name
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=4, in_chans=1)
    assert len(spec.to_json()) > 255
    assert resolve_model(spec.to_json()).spec == spec


@pytest.mark.parametrize(
    "content", [b"hello world\n", b"", bytes(range(256)) * 20, b"PK\x03\x04junk"]
)
def test_junk_weights_say_what_the_file_should_be(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    spec = get_spec("fcaformer_nano", img_size=32)
    with pytest.raises(ValueError) as err:
        export_cmd.load_weights(build_model(spec), path)
    message = str(err.value)
    assert message.startswith(f"--weights {path}: not a PyTorch checkpoint this command can read")
    assert "torch.save" in message and "state dict" in message
    assert "KeyError" not in message and "\n" not in message


def test_weights_pickled_with_other_objects_name_them(tmp_path):
    import argparse

    spec = get_spec("fcaformer_nano", img_size=32)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": build_model(spec).state_dict(), "args": argparse.Namespace(lr=1)}, path)
    match = r"holding objects other than tensors \(argparse\.Namespace\)"
    with pytest.raises(ValueError, match=match):
        export_cmd.load_weights(build_model(spec), path)
    with pytest.raises(ValueError, match="no such file"):
        export_cmd.load_weights(build_model(spec), tmp_path / "missing.pt")


def test_weights_that_do_not_fit_name_the_keys_and_shapes(tmp_path, capsys):
    spec = get_spec("fcaformer_nano", img_size=32)
    state = build_model(spec).state_dict()
    missing = [k for k in state if k.startswith("stages.3.")]
    assert len(missing) > 3
    for k in missing:
        del state[k]
    state["head.weight"] = torch.zeros(2, 2)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        export_cmd.load_weights(build_model(spec), path)
    message = str(err.value)
    assert message.startswith(f"--weights {path}: does not fit the model: ")
    head = tuple(build_model(spec).head.weight.shape)
    assert f"tensors of another shape (1): head.weight is (2, 2), the model's {head}" in message
    assert f"missing keys ({len(missing)}): {', '.join(missing[:3])} and " in message
    assert (
        f"and {len(missing) - 3} more" in message and "unexpected keys (1): extra.weight" in message
    )
    out = tmp_path / "x.onnx"
    argv = ["export", "fcaformer_nano", "--img-size", "32", "--weights", str(path)]
    assert main([*argv, "--out", str(out)]) == 2 and not out.exists()
    assert "head.weight is (2, 2)" in capsys.readouterr().err


class _Eigh(torch.nn.Module):  # an op the dynamo exporter has no ONNX function for
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigh(x @ x.T)[0]


def test_an_export_failure_says_what_failed_without_colours_or_advice(
    tmp_path, capsys, monkeypatch
):
    import fcasearch.runtime.onnx as onnx_mod

    real = onnx_mod.export_onnx

    def unexportable(model, example, path, **kwargs):
        return real(_Eigh().eval(), torch.randn(3, 3), path, **kwargs)

    monkeypatch.setattr(onnx_mod, "export_onnx", unexportable)
    out = tmp_path / "x.onnx"
    assert main(["export", "fcaformer_nano", "--img-size", "32", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "export failed" in err and "ConversionError" in err and "step 3/3" in err
    # the cause torch.onnx gives under "## Exception summary" (the first line ended at
    # "Next steps:", coloured)
    assert "DispatchError: No ONNX function found for" in err and "aten._linalg_eigh" in err
    assert "\x1b[" not in err and "Next steps" not in err and "Refer to the full" not in err
    assert len(err.splitlines()) <= 10 and len(err) < 1300
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_error_summary_keeps_a_bounded_part_of_long_errors():
    from fcasearch.runtime.errors import error_summary

    long = RuntimeError("\n".join(f"\x1b[31mline {i}\x1b[0m" for i in range(30)))
    text = error_summary(long)
    assert text.splitlines() == [
        "RuntimeError: line 0",
        *(f"line {i}" for i in range(1, 8)),
        "(22 more lines left off)",
    ]
    one = error_summary(ValueError("x" * 5000))
    assert one.startswith("ValueError: xxx") and one.endswith("...") and len(one) <= 1000
    assert error_summary(KeyError()) == "KeyError: "


def test_a_failed_export_leaves_nothing_at_out_and_a_file_there_untouched(
    tmp_path, capsys, monkeypatch
):
    import fcasearch.runtime.onnx as onnx_mod
    from fcasearch.runtime import UnsupportedModel

    out = tmp_path / "x.onnx"
    argv = ["export", "fcaformer_nano", "--img-size", "32", "--exporter", "torchscript"]
    argv += ["--out", str(out)]
    real = onnx_mod.verify_onnx

    def mismatch(*args, **kwargs):
        raise UnsupportedModel("onnxruntime: outputs differ from eager by up to 3 (tolerance 1e-4)")

    monkeypatch.setattr(onnx_mod, "verify_onnx", mismatch)
    assert main(argv) == 1 and not out.exists()
    assert f"not written to {out}" in capsys.readouterr().err
    out.write_bytes(b"a file of before")
    assert main(argv) == 1 and out.read_bytes() == b"a file of before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx"]  # no staged file left
    monkeypatch.setattr(onnx_mod, "verify_onnx", real)
    assert main(argv) == 0  # verified: it replaces the file there
    assert f"to {out} (" in capsys.readouterr().out
    assert _onnx_logits(out, torch.randn(1, 3, 32, 32)).shape == (1, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx"]
