"""The runtime registry: names, options, and clear errors for runtimes that cannot run here."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

from fcasearch.measure import measure_cost
from fcasearch.models import get_spec
from fcasearch.runtime import (
    RuntimeUnavailable,
    get_runtime,
    list_runtimes,
    parse_runtime_options,
    parse_runtimes,
)


def test_registry_names_and_versions():
    assert list_runtimes() == ["eager", "compile", "onnxruntime", "tensorrt"]
    for name in list_runtimes():
        rt = get_runtime(name)
        assert rt.name == name and isinstance(rt.version, str) and rt.version
    assert get_runtime("eager").version == f"torch {torch.__version__}"
    assert get_runtime("onnxruntime").version.startswith("onnxruntime ")


def test_unknown_names_and_options_are_refused():
    with pytest.raises(ValueError, match="choose one of eager, compile, onnxruntime, tensorrt"):
        get_runtime("openvino")
    with pytest.raises(ValueError, match=r"runtime 'eager' has no option\(s\) \['exporter'\]"):
        get_runtime("eager", exporter="dynamo")
    with pytest.raises(ValueError, match="exporter"):
        get_runtime("onnxruntime", exporter="tvm")
    with pytest.raises(ValueError, match=r"no option\(s\) \['bogus'\]; it takes exporter, opset"):
        get_runtime("onnxruntime", bogus=1)
    with pytest.raises(ValueError, match=r"'compile' has no option\(s\) \['mode'\]; it takes none"):
        get_runtime("compile", mode="max-autotune")
    with pytest.raises(ValueError, match="not an ONNX opset number"):
        get_runtime("onnxruntime", opset="18")
    one = get_runtime("onnxruntime", providers="CPUExecutionProvider")
    assert one.providers == ["CPUExecutionProvider"]  # one provider by name
    assert one.options == {"providers": ("CPUExecutionProvider",)}
    assert get_runtime("onnxruntime", providers=["CPUExecutionProvider"]).options == one.options
    with pytest.raises(ValueError, match="not execution provider names"):
        get_runtime("onnxruntime", providers={"CPUExecutionProvider": 1})
    # options at their defaults are no options
    assert get_runtime("eager", pointwise_conv=True).options == {}
    assert get_runtime("onnxruntime", exporter="auto", opset=None).options == {}
    assert get_runtime("eager", pointwise_conv=False).options == {"pointwise_conv": False}


def test_parse_runtime_options():
    got = parse_runtime_options(
        [
            "eager.pointwise_conv=FALSE",
            "onnxruntime.opset=18",
            "onnxruntime.providers=TensorrtExecutionProvider, CUDAExecutionProvider",
            "onnxruntime.exporter = dynamo",
        ]
    )
    assert got == {
        "eager": {"pointwise_conv": False},
        "onnxruntime": {
            "opset": 18,
            "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
            "exporter": "dynamo",
        },
    }
    assert parse_runtime_options([]) == {}
    assert get_runtime("eager", **got["eager"]).pointwise_conv is False
    for bad, message in [
        ("pointwise_conv=false", "give RUNTIME.KEY=VALUE"),
        ("eager.pointwise_conv", "give RUNTIME.KEY=VALUE"),
        ("eager.=1", "give RUNTIME.KEY=VALUE"),
        ("openvino.threads=2", "runtime 'openvino' is not known"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_runtime_options([bad])
    with pytest.raises(ValueError, match=r"eager\.pointwise_conv is given twice"):
        parse_runtime_options(["eager.pointwise_conv=true", "eager.pointwise_conv=false"])


def test_parse_runtimes():
    assert parse_runtimes("eager, onnxruntime,eager") == ["eager", "onnxruntime"]
    assert parse_runtimes(["compile"]) == ["compile"]
    with pytest.raises(ValueError, match="'tvm' is not known"):
        parse_runtimes("eager,tvm")
    with pytest.raises(ValueError, match="names no runtime"):
        parse_runtimes(" , ")


@pytest.mark.parametrize("installed", [True, False])
def test_tensorrt_on_cpu_says_it_needs_a_gpu(monkeypatch, installed):
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "torch_tensorrt":
            return object() if installed else None
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(RuntimeUnavailable, match=r"NVIDIA GPUs only.*--device cuda") as info:
        get_runtime("tensorrt").check("cpu")
    # and, where it is missing too, the package (a GPU alone would not have been enough)
    assert ("pip install torch-tensorrt" in str(info.value)) == (not installed)


@pytest.mark.skipif(
    importlib.util.find_spec("torch_tensorrt") is not None, reason="torch-tensorrt is installed"
)
def test_tensorrt_not_installed_names_the_package():
    with pytest.raises(RuntimeUnavailable, match="pip install torch-tensorrt"):
        get_runtime("tensorrt").check(torch.device("cuda"))


def test_onnxruntime_not_installed_names_the_packages(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )
    with pytest.raises(RuntimeUnavailable, match=r"onnxruntime.*pip install onnx onnxruntime"):
        get_runtime("onnxruntime").check("cpu")


def test_onnxruntime_without_a_gpu_provider_names_onnxruntime_gpu():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(RuntimeUnavailable, match=r"CUDAExecutionProvider.*onnxruntime-gpu"):
        get_runtime("onnxruntime").check(torch.device("cuda"))


def test_compile_without_a_cpp_compiler_says_what_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeUnavailable, match=r"C\+\+ compiler.*apt install g\+\+"):
        get_runtime("compile").check("cpu")


def test_measure_cost_raises_before_measuring_on_an_unavailable_runtime():
    spec = get_spec("fcaformer_nano", img_size=32)
    with pytest.raises(RuntimeUnavailable, match="NVIDIA GPUs only"):
        measure_cost(spec, runtime="tensorrt")
    # closed form only: nothing runs, so nothing needs the runtime
    res = measure_cost(spec, runtime="tensorrt", latency=False, memory=False, energy=False)
    assert res.ok and res.runtime == "tensorrt"


def test_importing_the_package_loads_no_onnxruntime():
    import subprocess
    import sys

    code = (
        "import sys, fcasearch.runtime as r; r.get_runtime('eager'); "
        "print(any(m.startswith(('onnxruntime', 'torch_tensorrt')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
