"""The compile runtime: torch.compile (Inductor) of the folded model computes the unfolded
model's outputs; without a C++ compiler it says what to install."""

from __future__ import annotations

import shutil

import pytest
import torch

from fcasearch.models import build_model, calibrate_batchnorm, get_spec
from fcasearch.runtime import CompileError, compile_for_inference, get_runtime
from fcasearch.runtime.compiled import cpp_compiler_available

needs_cxx = pytest.mark.skipif(
    not cpp_compiler_available(), reason="torch.compile on CPU needs a C++ compiler"
)


@pytest.mark.slow
@needs_cxx
def test_compile_runtime_equals_the_unfolded_model():
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=7)
    torch.manual_seed(3)
    model = calibrate_batchnorm(build_model(spec))
    with torch.no_grad():  # every weight away from its init, layer scales and tables included
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    prepared = get_runtime("compile").prepare(model, x)
    assert model.fused  # folded on the way
    assert prepared.runtime == "compile" and "inductor" in prepared.version
    assert "torch.compile" in prepared.note and prepared.max_abs_diff < 1e-4
    torch.testing.assert_close(prepared(x), want, rtol=1e-4, atol=1e-4)
    assert prepared.run().shape == (2, 7)


def test_compile_without_cxx_says_what_to_do(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    model = build_model(get_spec("fcaformer_nano", img_size=32, num_classes=3))
    with pytest.raises(CompileError, match="C\\+\\+ compiler"):
        compile_for_inference(model, torch.randn(1, 3, 32, 32))


def test_a_cxx_that_is_not_there_stops_before_anything_runs(monkeypatch, tmp_path, capsys):
    """$CXX=/nonexistent/g++ (Inductor takes $CXX): the check passed on the g++ on PATH, and a
    search then recorded every trial failed, a profile row unsupported."""
    from fcasearch.cli import main
    from fcasearch.runtime import RuntimeUnavailable, get_runtime

    monkeypatch.setenv("CXX", str(tmp_path / "no" / "g++"))
    assert not cpp_compiler_available()
    with pytest.raises(RuntimeUnavailable, match="CXX"):
        get_runtime("compile").check("cpu")
    out = tmp_path / "run"
    argv = ["search", "--space", "micro", "--out", str(out), "--runtime", "compile",
            "--n-trials", "1", "--no-progress", "--no-report", "--references", "none"]  # fmt: skip
    assert main(argv) == 2
    assert "$CXX=" in capsys.readouterr().err and not out.exists()


def test_a_cxx_command_line_counts_by_its_program(monkeypatch, tmp_path):
    """Inductor splits $CXX into words (``ccache g++``, ``g++ -w``); the check looked the whole
    text up as one program and refused a working compiler."""
    program = tmp_path / "mycxx"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("CXX", f"{program} -w")
    assert cpp_compiler_available()
    monkeypatch.setenv("CXX", f"{tmp_path / 'none'} -w")
    assert not cpp_compiler_available()
