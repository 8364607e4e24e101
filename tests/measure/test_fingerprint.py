"""Hardware fingerprint: fields, JSON safety, a stable id over identifying fields only."""

from __future__ import annotations

import json
import re
import types

import pytest
import torch

from fcasearch.measure.fingerprint import IDENTIFYING_FIELDS, fingerprint_id, hardware_fingerprint

REQUIRED = (
    "cpu_model", "cpu_cores", "threads", "gpu_name", "gpu_uuid", "driver", "cuda", "cudnn",
    "torch", "power_limit_w", "mig_mode", "device",
)  # fmt: skip


def test_cpu_fingerprint_fields():
    fp = hardware_fingerprint("cpu", threads=1)
    assert set(REQUIRED) <= set(fp)
    assert json.loads(json.dumps(fp)) == fp
    assert fp["device"] == "cpu" and fp["threads"] == 1
    assert fp["cpu_cores"] >= 1 and fp["cpu_model"]
    assert fp["torch"] == torch.__version__
    for key in ("gpu_name", "gpu_uuid", "driver", "cuda", "cudnn", "power_limit_w", "mig_mode"):
        assert fp[key] is None, key


def test_threads_default_to_torch():
    assert hardware_fingerprint("cpu")["threads"] == torch.get_num_threads()


def test_id_is_stable_and_ignores_non_identifying_fields():
    fp = hardware_fingerprint("cpu", threads=2)
    fid = fingerprint_id(fp)
    assert re.fullmatch(r"[0-9a-f]{12}", fid)
    assert fingerprint_id(dict(fp)) == fid == fingerprint_id(hardware_fingerprint("cpu", threads=2))
    assert fingerprint_id({**fp, "gpu_uuid": "GPU-other", "platform": "x", "python": "y"}) == fid
    # threads is a measurement setting (its own column), not hardware: one machine, one id
    assert fingerprint_id({**fp, "threads": 3}) == fid
    assert fingerprint_id({**fp, "torch": "0.0"}) != fid
    assert "gpu_uuid" not in IDENTIFYING_FIELDS and "threads" not in IDENTIFYING_FIELDS


class FakeNVML:
    class NVMLError(Exception):
        pass

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        assert uuid == "GPU-1234"
        return "h"

    def nvmlDeviceGetHandleByIndex(self, index):
        raise AssertionError("the UUID should have been used")

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000  # mW

    def nvmlDeviceGetMigMode(self, handle):
        return (0, 0)


def test_gpu_fields_from_torch_and_a_fake_nvml(monkeypatch):
    props = types.SimpleNamespace(
        name="Fake H100", uuid="1234", total_memory=80 * 2**30, major=9, minor=0
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    fp = hardware_fingerprint("cuda", threads=4, nvml=FakeNVML())
    assert fp["device"] == "cuda" and fp["gpu_name"] == "Fake H100" and fp["gpu_uuid"] == "GPU-1234"
    assert (
        fp["driver"] == "550.54.15"
        and fp["power_limit_w"] == 700.0
        and fp["mig_mode"] == "disabled"
    )
    assert fp["gpu_memory_mb"] == 80 * 1024 and fp["nvml"] == "ok"
    assert json.loads(json.dumps(fp)) == fp


def test_gpu_fields_without_nvml_say_why(monkeypatch):
    props = types.SimpleNamespace(name="Fake", uuid="", total_memory=2**30, major=8, minor=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    class Missing(FakeNVML):
        class NVMLError_LibraryNotFound(FakeNVML.NVMLError):
            pass

        def nvmlInit(self):
            raise self.NVMLError_LibraryNotFound("not found")

    fp = hardware_fingerprint("cuda", nvml=Missing())
    assert fp["driver"] is None and fp["power_limit_w"] is None
    assert fp["nvml"].startswith("unavailable: NVML not found")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        hardware_fingerprint("cuda")


@pytest.mark.gpu
def test_real_gpu_fingerprint():
    fp = hardware_fingerprint("cuda")
    assert fp["gpu_name"] and fp["cuda"] and fp["gpu_uuid"]
    assert json.loads(json.dumps(fp)) == fp
