"""``--dynamic-batch``: the file runs at any batch, on both exporters, and is checked at two.

FcaFormer runs its MLPs on chunks of rows in CPU inference, as many as the batch needs
(:func:`fcasearch.models.layers.in_row_chunks`): traced that way, the batch was fixed in the file.
At 224 px that happens from batch 1 (L1's first stage has 3,136 rows an image, in chunks of 2,048);
the tiny models here get there with smaller chunks.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import fcasearch.models.layers as layers
import fcasearch.runtime.onnx as onnx_mod
from fcasearch.cli import main
from fcasearch.measure.prepare import deployable, trained_like_values
from fcasearch.models import build_model, get_spec
from fcasearch.runtime.onnx import export_onnx, onnx_session


@pytest.fixture
def small_chunks(monkeypatch):
    """MLP rows in chunks of a few rows, so a 32 px model chunks as L1 does at 224 px."""
    monkeypatch.setattr(layers, "HIDDEN_CHUNK", 1 << 10)


def _batch_dim(path) -> onnx.TensorShapeProto.Dimension:
    graph = onnx.load(str(path), load_external_data=False).graph
    (images,) = [i for i in graph.input if i.name == "images"]
    return images.type.tensor_type.shape.dim[0]


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_free_batch_runs_at_other_batches_than_the_example(tmp_path, small_chunks, exporter):
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=4)
    # trained-like values, so the logits are large enough for the comparison to mean something
    model, _ = deployable(trained_like_values(build_model(spec)))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert model(x).abs().max() > 1e-2
    info = export_onnx(model, x, tmp_path / "m.onnx", exporter=exporter, dynamic_batch=True)
    assert _batch_dim(info.path).dim_param  # a named, free dimension
    session = onnx_session(info.path)
    for batch in (1, 3, 5):
        xb = torch.randn(batch, 3, 32, 32)
        (got,) = session.run(["logits"], {"images": xb.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(xb).numpy(), rtol=1e-4, atol=1e-5)


def test_cli_dynamic_batch_with_the_default_exporter(tmp_path, capsys, small_chunks):
    out = tmp_path / "nano.onnx"
    argv = ["export", "fcaformer_nano", "--img-size", "32", "--out", str(out), "--dynamic-batch"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "dynamo exporter" in text and "batch free" in text and "at batch 1 and 3:" in text
    assert _batch_dim(out).dim_param == "batch"
    session = onnx_session(out)
    for batch in (1, 4):
        (got,) = session.run(["logits"], {"images": np.zeros((batch, 3, 32, 32), np.float32)})
        assert got.shape == (batch, 1000)


def test_a_file_whose_batch_came_out_fixed_fails_the_check(tmp_path, capsys, monkeypatch):
    # an exporter that writes the traced batch into the file, whatever was asked: the check at
    # batch 1 and 3 must catch it, say what ONNX Runtime said in full, and leave nothing behind
    real = onnx_mod.export_onnx

    def fixed_batch(model, example, path, **kwargs):
        kwargs["dynamic_batch"] = False
        return real(model, example, path, **kwargs)

    monkeypatch.setattr(onnx_mod, "export_onnx", fixed_batch)
    out = tmp_path / "x.onnx"
    argv = ["export", "fcaformer_nano", "--img-size", "32", "--exporter", "torchscript"]
    assert main([*argv, "--out", str(out), "--dynamic-batch"]) == 1
    err = capsys.readouterr().err
    assert "does not match the model" in err and "Got invalid dimensions for input: images" in err
    assert "index: 0 Got: 3 Expected: 1" in err  # the line after the first, kept
    assert "\x1b[" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_onnx_refuses_a_fixed_batch_when_a_free_one_was_asked_for(tmp_path, monkeypatch):
    import torch.onnx

    from fcasearch.runtime import UnsupportedModel

    real = torch.onnx.export

    def no_dynamic_axes(*args, **kwargs):  # an exporter that ignores the request
        kwargs.pop("dynamic_axes", None)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamic_axes)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    with pytest.raises(UnsupportedModel, match=r"fixed the batch of m\.onnx at 2"):
        export_onnx(
            model, torch.randn(1, 3, 2, 2), tmp_path / "m.onnx", exporter="torchscript",
            dynamic_batch=True,
        )  # fmt: skip


@pytest.mark.slow
def test_fcaformer_l1_with_a_free_batch(tmp_path, capsys):
    # the audit's case: L1 at 224 px chunks its MLPs from batch 1; the dynamo export fixed the
    # batch at 1 (and at 2 with --batch-size 2), and the tracing exporter wrote a broken Split
    out = tmp_path / "l1.onnx"
    assert main(["export", "fcaformer_l1", "--out", str(out), "--dynamic-batch"]) == 0
    assert "at batch 1 and 3:" in capsys.readouterr().out
    assert _batch_dim(out).dim_param == "batch"
