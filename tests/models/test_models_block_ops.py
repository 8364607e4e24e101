"""Fused blocks as single kernel operators (kernels/block.cpp): the same outputs as the per-step
Python path for every block variant, used only where every step is on fcasearch's kernels, and
weight edits seen."""

from __future__ import annotations

import copy

import pytest
import torch
from kernel_helpers import OpNames, needs_kernel
from test_models_attention import _randomize  # bias tables, layer scales, scale factors

from fcasearch.models import build_model, calibrate_batchnorm, fuse_for_inference, layers
from fcasearch.models.convnext import ConvNeXtBlock, Downsample, Stem
from fcasearch.models.fca import FcaBlock
from fcasearch.models.fuse import per_step
from fcasearch.spec import ArchSpec, StageSpec

# Every variant a block can take: cross tokens from one emitter and from several (a cat), scale
# factors and cross bias on and off, blocks that do not emit, no enhancement (no local conv), a
# plain attention stage (no emitter at all), a stride-3 merge, a non-square grid, and MLP widths
# that fill the GEMM's 32-column panels partly (mlp_ratio 3.5: 56 and 112).
SPECS = {
    "paper-like": ArchSpec(
        (StageSpec("conv", 2, 16), StageSpec("fca", 4, 32, 2, merge_stride=2, cross_window=2),
         StageSpec("fca", 3, 48, 3)),
        img_size=(64, 32),
    ),
    "ablations": ArchSpec(
        (StageSpec("conv", 1, 16, mlp_ratio=3.5),
         StageSpec("fca", 3, 32, 4, mlp_ratio=3.5, merge_stride=3, tme=(0, 1), enhancement=False,
                   scale_factors=False, cross_bias=False),
         StageSpec("fca", 2, 32, 2, tme="none")),
        img_size=(96, 64),
    ),
}  # fmt: skip


def _pair(spec: ArchSpec) -> tuple[torch.nn.Module, torch.nn.Module]:
    model = calibrate_batchnorm(build_model(spec))
    _randomize(model)
    steps = fuse_for_inference(copy.deepcopy(model), gemm="fcasearch", block_ops=False)
    one_op = fuse_for_inference(model, gemm="fcasearch")
    return steps, one_op


@needs_kernel
@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("chunked", [False, True])
def test_block_ops_equal_the_per_step_path(kernel, monkeypatch, name, chunked):
    if chunked:  # every MLP in row chunks
        monkeypatch.setattr(layers, "MLP_CHUNK_ELEMENTS", 1024)
    spec = SPECS[name]
    steps, one_op = _pair(spec)
    x = torch.randn(2, 3, *spec.img_size)
    with torch.inference_mode(), OpNames() as ops:
        got = one_op(x)
    fca = sum(isinstance(m, FcaBlock) for m in one_op.modules())
    conv = sum(isinstance(m, ConvNeXtBlock) for m in one_op.modules())
    assert ops.names.count("fcasearch_kernels.fca_block") == fca
    assert ops.names.count("fcasearch_kernels.convnext_block") == conv
    with torch.inference_mode(), OpNames() as ops:
        want = steps(x)
    assert "fcasearch_kernels.fca_block" not in ops.names
    # the same kernels in the same order: equal to the last bit
    assert torch.equal(got, want)


def _random_bn(module: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics and affine parameters away from the identity, layer scales not 1."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
            if isinstance(m, ConvNeXtBlock):
                m.gamma.normal_()
    return module.eval()


# The operators that run a stage part in bands of rows, one band per thread at a time: odd map
# sides (a short last band, padding on every side), several images, 1-3 threads (so bands split
# unevenly and a thread's bands cross from one image to the next).
BANDED = {
    "stem": (lambda: Stem(3, 32), (3, 3, 61, 45), "stem"),
    "downsample": (lambda: Downsample(16, 24), (2, 16, 29, 13), "downsample"),
    "convnext": (lambda: ConvNeXtBlock(40, 72, 0.0, 1.0), (3, 40, 23, 17), "convnext_block"),
}


@needs_kernel
@pytest.mark.parametrize("name", list(BANDED))
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_banded_operators_equal_the_per_step_path(kernel, name, threads):
    make, shape, op = BANDED[name]
    torch.manual_seed(0)
    net = fuse_for_inference(torch.nn.Sequential(_random_bn(make())), gemm="fcasearch")
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode(), OpNames() as ops:
            net(x)  # packs the weights
            got = net(x)
        with torch.inference_mode(), per_step(net), OpNames() as step_ops:
            want = net(x)
    finally:
        torch.set_num_threads(before)
    assert [n for n in ops.names if n.startswith("fcasearch")][-1:] == [f"fcasearch_kernels.{op}"]
    assert ops.names.count(f"fcasearch_kernels.{op}") == 2
    assert f"fcasearch_kernels.{op}" not in step_ops.names and len(step_ops.names) >= 2
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, want)  # the same kernels' arithmetic, value for value


@needs_kernel
def test_block_ops_only_where_every_step_is_on_the_kernels(kernel):
    spec = SPECS["paper-like"]
    _, model = _pair(spec)
    x = torch.randn(1, 3, *spec.img_size)

    def block_ops() -> int:
        with torch.inference_mode(), OpNames() as ops:
            model(x)
        return sum(n.endswith("_block") for n in ops.names)

    assert block_ops() == 2 + 4 + 3
    fuse_for_inference(model, gemm="onednn")  # GEMMs elsewhere: the per-step path
    assert block_ops() == 0
    fuse_for_inference(model, gemm="auto", kernels="off")
    assert block_ops() == 0
    fuse_for_inference(model, gemm="fcasearch")
    with OpNames() as ops:  # autograd wanted (no inference mode, an input that needs a gradient)
        model(x.requires_grad_()).sum().backward()
    assert not any(n.endswith("_block") for n in ops.names)


@needs_kernel
def test_block_ops_see_weight_edits(kernel):
    spec = SPECS["paper-like"]
    steps, one_op = _pair(spec)
    x = torch.randn(1, 3, *spec.img_size)
    with torch.inference_mode():
        one_op(x)  # packs every weight
    with torch.no_grad():
        for m in (steps, one_op):
            blk = m.stages[1].blocks[2]
            blk.mlp.fc1.weight.mul_(1.5)  # a packed weight: packed again
            blk.norm1.weight.add_(0.25)  # passed as it is
            m.stages[0].blocks[1].pwconv2.weight.mul_(-1.0)
    with torch.inference_mode():
        assert torch.equal(one_op(x), steps(x))


@needs_kernel
def test_block_op_says_what_is_missing(kernel):
    x = torch.randn(1, 4, 8)
    ops = torch.ops.fcasearch_kernels
    with pytest.raises(RuntimeError, match="25 parameters, 6 settings and 4 epsilons"):
        ops.fca_block(x, None, [None] * 3, [2, 2, 2, 0, 16, 4096], [1e-5] * 4)
    with pytest.raises(RuntimeError, match=r"parameter [01] \(norm1 (weight|bias)\) is missing"):
        ops.fca_block(x, None, [None] * 25, [2, 2, 2, 0, 16, 4096], [1e-5] * 4)
    with pytest.raises(RuntimeError, match="settings do not fit"):
        ops.fca_block(x, None, [None] * 25, [3, 2, 2, 0, 16, 4096], [1e-5] * 4)
    grid = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="8 parameters, 1 setting"):
        ops.convnext_block(grid, [None] * 8, [32, 4096], 1e-6)
    with pytest.raises(RuntimeError, match=r"parameter 0 \(dwconv weight\) is missing"):
        ops.convnext_block(grid, [None] * 8, [32], 1e-6)
    with pytest.raises(RuntimeError, match="channels-last"):
        ops.convnext_block(grid.contiguous(), [None] * 8, [32], 1e-6)
    with pytest.raises(RuntimeError, match=r"is not pack_linear's for 8 -> 16"):
        ops.downsample(grid, [torch.zeros(1, 4, 32), None, torch.zeros(16, 1, 3, 3), None,
                              torch.zeros(1, 16, 32), None], [16, 2, 1])  # fmt: skip
    with pytest.raises(RuntimeError, match="does not fit a 2x2 image"):
        ops.stem(torch.randn(1, 3, 2, 2), [None] * 4, [8, 16, 7, 2, 1])


@needs_kernel
def test_relative_attention_bias_equals_the_mask(kernel):
    # the block operator's attention makes the bias from the position-bias segments and the
    # cross-token biases as it reads them: the same values as the frozen (1, h, N, N + M) mask
    torch.manual_seed(0)
    block = FcaBlock(32, 4, 64, (3, 5), cross_in=7, merge_stride=None, enhancement=False,
                     scale_factors=False, cross_bias=True, drop_path=0.0, layer_scale_init=1.0)  # fmt: skip
    with torch.no_grad():
        block.attention_biases.normal_()
        block.s_token_bias.normal_()
    block.freeze_mask()
    q, k, v = torch.randn(2, 4, 15, 8), torch.randn(2, 4, 22, 8), torch.randn(2, 4, 22, 8)
    got = torch.ops.fcasearch_kernels.fca_attention_relative(
        q, k, v, block.frozen_segments, block.frozen_cross_bias, 0.35
    )
    want = torch.ops.fcasearch_kernels.fca_attention(q, k, v, block.frozen_mask, 0.35)
    assert torch.equal(got, want)
    zeros = torch.ops.fcasearch_kernels.fca_attention_relative(
        q, k, v, block.frozen_segments, None, 0.35
    )
    mask = block.frozen_mask.clone()
    mask[..., 15:] = 0
    assert torch.equal(zeros, torch.ops.fcasearch_kernels.fca_attention(q, k, v, mask, 0.35))
    with pytest.raises(RuntimeError, match=r"segments .* are not \(h, Rh, Rw, Rw\)"):
        torch.ops.fcasearch_kernels.fca_attention_relative(
            q, k, v, block.frozen_segments[:, :2], None, 0.35
        )


@needs_kernel
def test_block_op_arguments_are_kept_until_something_they_are_made_of_changes(kernel, monkeypatch):
    spec = SPECS["paper-like"]
    steps, one_op = _pair(spec)
    x = torch.randn(1, 3, *spec.img_size)
    builds = []
    make = FcaBlock._one_op_args
    monkeypatch.setattr(
        FcaBlock, "_one_op_args", lambda blk, nc: builds.append(blk) or make(blk, nc)
    )
    fca = [m for m in one_op.modules() if isinstance(m, FcaBlock)]

    def check(rebuilt: set[int]) -> None:
        builds.clear()
        with torch.inference_mode():
            assert torch.equal(one_op(x), steps(x))
        assert {fca.index(b) for b in builds} == rebuilt

    check(set(range(len(fca))))  # first call: every block builds its arguments
    check(set())  # then they are kept
    a, b = steps.stages[1].blocks, one_op.stages[1].blocks
    with torch.no_grad():
        for blk in (a[0], b[0]):  # a parameter replaced
            blk.norm1.weight = torch.nn.Parameter(blk.norm1.weight * 1.5, requires_grad=False)
        a[1].mlp.fc2.weight.add_(0.1)  # a packed weight edited in place
        b[1].mlp.fc2.weight.add_(0.1)
        a[2].mlp.fc1, b[2].mlp.fc1 = (copy.deepcopy(a[3].mlp.fc1) for _ in range(2))  # replaced
    for blk in (a[3], b[3]):
        blk.norm2.eps = 1e-2  # a setting
    check({0, 1, 2, 3})
    check(set())
