"""A fused model's whole eager forward as one kernel operator (models/network.py,
kernels/network.cpp): the modules' outputs bit for bit, used only where every part runs as one
operator and nothing watches the modules, recorded again when anything it was made of changes."""

from __future__ import annotations

import pytest
import torch
from kernel_helpers import OpNames, needs_kernel
from test_models_block_ops import SPECS, _pair

from fcasearch.models import fuse_for_inference, network
from fcasearch.models.network import CONVNEXT, DOWNSAMPLE, FCA, HEAD, MAP, STEM, TOKENS


def _ops_run(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """The output and the operators a profiler saw (no dispatch mode, which would turn the
    network operator off)."""
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:  # fmt: skip
        out = model(x)
    return out, [e.name for e in prof.events()]


def _modules(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output through the modules (the block operators, one Python call each)."""
    model.block_kernel = False
    try:
        with torch.inference_mode():
            return model(x)
    finally:
        model.block_kernel = True


@needs_kernel
@pytest.mark.parametrize("name", list(SPECS))
def test_network_equals_the_modules(kernel, name):
    spec = SPECS[name]
    steps, model = _pair(spec)
    x = torch.randn(2, 3, *spec.img_size)
    first, names = _ops_run(model, x)  # recorded: the modules ran
    assert "fcasearch_kernels::network" in names  # and the check against them
    again, names = _ops_run(model, x)
    assert "fcasearch_kernels::network" in names
    assert "fcasearch_kernels::fca_block" not in names  # within the operator, not dispatched
    assert torch.equal(again, first)
    assert torch.equal(again, _modules(model, x))
    with torch.inference_mode():
        assert torch.equal(again, steps(x))  # the per-step path too


def _recorded_pair(name: str, monkeypatch):
    """The per-step and the one-operator model of SPECS[name], an input, and the recordings of
    the second (see _recordings)."""
    spec = SPECS[name]
    steps, model = _pair(spec)
    return steps, model, torch.randn(1, 3, *spec.img_size), _recordings(monkeypatch)


def _recordings(monkeypatch) -> list[bool]:
    """One entry per recorded forward: whether it gave a program."""
    made: list[bool] = []
    record = network._record

    def counted(model, x):
        args, watch, out = record(model, x)
        made.append(args is not None)
        return args, watch, out

    monkeypatch.setattr(network, "_record", counted)
    return made


@needs_kernel
def test_network_is_recorded_again_when_its_parts_change(kernel, monkeypatch):
    steps, model, x, made = _recorded_pair("paper-like", monkeypatch)

    def check(*recorded: bool) -> None:
        made.clear()
        with torch.inference_mode():
            assert torch.equal(model(x), steps(x))
        assert made == list(recorded)

    check(True)  # the first call records
    check()  # then the program is kept
    blk = model.stages[1].blocks[2]
    blk.block_kernel = False  # one block step by step: no program, the modules run
    check(False)
    check()
    blk.block_kernel = True
    check(True)
    with torch.no_grad():  # a packed weight edited in place: packed again, recorded again
        for m in (steps, model):
            m.stages[1].blocks[0].mlp.fc1.weight.mul_(1.25)
            m.stages[0].blocks[0].pwconv1.weight.add_(0.01)
    check(True)
    for m in (steps, model):  # a setting
        m.stages[2].blocks[1].norm2.eps = 1e-3
    check(True)
    model.stages[0].blocks[1].norm = torch.nn.LayerNorm(16, eps=1e-6)  # a module replaced
    steps.stages[0].blocks[1].norm = model.stages[0].blocks[1].norm
    check(True)
    check()


@needs_kernel
def test_network_leaves_watched_modules_alone(kernel, monkeypatch):
    _, model, x, made = _recorded_pair("ablations", monkeypatch)
    with torch.inference_mode():
        want = model(x)
    seen = []
    handle = model.stages[1].blocks[0].register_forward_hook(lambda *a: seen.append(1))
    with torch.inference_mode():  # a hook: the modules run and it fires
        assert torch.equal(model(x), want)
    assert seen == [1] and made == [True, False]
    handle.remove()
    with torch.inference_mode(), OpNames() as ops:  # a dispatch mode sees every block operator
        assert torch.equal(model(x), want)
    assert "fcasearch_kernels.network" not in ops.names
    assert "fcasearch_kernels.fca_block" in ops.names
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: seen.append(2))
    try:
        with torch.inference_mode():
            assert torch.equal(model(x), want)
    finally:
        handle.remove()
    assert 2 in seen
    fuse_for_inference(model, gemm="onednn")  # parts off the block operators: no program
    made.clear()
    with torch.inference_mode():
        torch.testing.assert_close(model(x), want)
    assert made == [False]


@needs_kernel
def test_network_program_matches_the_model(kernel):
    spec = SPECS["paper-like"]  # conv stage of 2, fca stages of 4 and 3
    _, model = _pair(spec)
    assert network.expected_codes(model) == [
        STEM, CONVNEXT, CONVNEXT, DOWNSAMPLE, TOKENS, FCA, FCA, FCA, FCA, MAP, DOWNSAMPLE,
        TOKENS, FCA, FCA, FCA, MAP, HEAD,
    ]  # fmt: skip


@needs_kernel
def test_network_op_says_what_is_wrong(kernel):
    op = torch.ops.fcasearch_kernels.network
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(RuntimeError, match="ends inside a step"):
        op(x, [None] * 4, [STEM, 16, 32], [])
    with pytest.raises(RuntimeError, match=r"step code 9 is not one of 1\.\.7"):
        op(x, [], [9], [])
    with pytest.raises(RuntimeError, match="fewer parameters than the steps need"):
        op(x, [None] * 3, [STEM, 16, 32, 3, 2, 1], [])
    with pytest.raises(RuntimeError, match="used 0 of 2 parameters"):
        op(x, [None] * 2, [], [])
    with pytest.raises(RuntimeError, match="reads block 0, which emitted nothing"):
        op(x.view(1, 3, 32, 32), [None] * 25, [TOKENS, FCA, 1, 32, 32, 0, 4, 4096, 1, 1, 0],
           [1e-5] * 4)  # fmt: skip
