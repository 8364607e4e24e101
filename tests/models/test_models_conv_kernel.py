"""fcasearch's dense-conv kernel (the conv stem as an implicit GEMM): equal to F.conv2d for any
input layout, rejects what it cannot compute, and serves the fused model's stem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_helpers import OpNames, needs_kernel

from fcasearch.models import build_model, calibrate_batchnorm, fuse_for_inference, get_spec
from fcasearch.models.fuse import per_step
from fcasearch.models.kernels import conv2d, conv_kernel_applies, pack_conv


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "nchw":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    wide = torch.zeros(*x.shape[:3], 2 * x.shape[3])  # every other column: a strided view
    wide[..., ::2] = x
    return wide[..., ::2]


@needs_kernel
@pytest.mark.parametrize(
    "b,cin,cout,h,w,k,stride,pad,bias,gelu,layout",
    [
        (1, 3, 32, 224, 224, 3, 2, 1, True, True, "nchw"),  # L1's first stem conv
        (1, 32, 64, 112, 112, 3, 2, 1, True, False, "channels_last"),  # its second
        (2, 3, 24, 33, 17, 3, 2, 1, True, True, "nchw"),  # odd sides, a partial panel
        (2, 5, 40, 9, 11, 3, 1, 1, False, False, "strided"),  # no bias, any strides
        (1, 16, 33, 8, 8, 5, 1, 2, True, True, "channels_last"),  # 33 outputs: 2 panels
        (3, 7, 8, 6, 5, 1, 1, 0, True, False, "nchw"),  # 1x1: a Linear per pixel
        (1, 4, 16, 4, 4, 3, 3, 3, True, False, "nchw"),  # padding reaching past the map
    ],
)
def test_conv2d_equals_f_conv2d(kernel, b, cin, cout, h, w, k, stride, pad, bias, gelu, layout):
    gen = torch.Generator().manual_seed(cin * cout + k)
    x = _layout(torch.randn(b, cin, h, w, generator=gen), layout)
    weight = torch.randn(cout, cin, k, k, generator=gen) * 0.2
    bvec = torch.randn(cout, generator=gen) if bias else None
    with torch.inference_mode():
        want = F.conv2d(x, weight, bvec, stride, pad)
        if gelu:
            want = F.gelu(want)
        got = conv2d(x, pack_conv(weight), cout, bvec, k, stride, pad, gelu)
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


@needs_kernel
def test_conv2d_rejects_bad_inputs_and_applies_only_to_dense_convs(kernel):
    x, w = torch.randn(1, 3, 8, 8), torch.randn(16, 3, 3, 3)
    packed = pack_conv(w)
    assert packed.shape == (1, 27, 32)
    with pytest.raises(RuntimeError, match=r"packed \[1, 27, 32\] is not .* 5x5 kernel over 3"):
        conv2d(x, packed, 16, None, 5, 1, 2)
    with pytest.raises(RuntimeError, match="bias must be a contiguous float32 vector of 16"):
        conv2d(x, packed, 16, torch.zeros(8), 3, 1, 1)
    with pytest.raises(RuntimeError, match="smaller than the kernel"):
        conv2d(torch.randn(1, 3, 2, 2), packed, 16, None, 3, 1, 0)
    with pytest.raises(RuntimeError, match="float32"):
        conv2d(x.double(), packed, 16, None, 3, 1, 1)
    conv = torch.nn.Conv2d(3, 16, 3, padding=1).requires_grad_(False)
    assert conv_kernel_applies(conv, x)
    assert not conv_kernel_applies(torch.nn.Conv2d(4, 4, 3, groups=2), torch.randn(1, 4, 8, 8))
    assert not conv_kernel_applies(torch.nn.Conv2d(3, 16, 3, dilation=2), x)
    assert not conv_kernel_applies(torch.nn.Conv2d(3, 16, (3, 1)), x)
    assert not conv_kernel_applies(conv, x.double())
    assert not conv_kernel_applies(torch.nn.Conv2d(3, 16, 3), x)  # its weight wants a gradient


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fused_stem_runs_on_the_kernel_on_fcasearch_gemms_only(kernel, layout):
    spec = get_spec("fcaformer_tiny", img_size=64, num_classes=10)
    model = calibrate_batchnorm(build_model(spec))
    x = _layout(torch.randn(2, 3, 64, 64), layout)
    with torch.inference_mode():
        unfused = model(x)
    fused = fuse_for_inference(model, gemm="fcasearch")
    with torch.inference_mode(), OpNames() as ops:
        stem_out = fused.stem(x)
        out = fused(x)
    assert ops.names.count("fcasearch_kernels.stem") == 2  # both convs as one operator, two calls
    with torch.inference_mode(), per_step(fused), OpNames() as step_ops:
        assert torch.equal(fused.stem(x), stem_out)  # the same kernel, conv by conv
    assert step_ops.names.count("fcasearch_kernels.conv2d") == 2
    for names in (ops.names, step_ops.names):
        assert "aten.convolution" not in names and "mkldnn._convolution_pointwise" not in names
    assert stem_out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, unfused, rtol=1e-4, atol=1e-5)
    fuse_for_inference(fused, gemm="onednn")  # the stem back on the library's convolution
    with torch.inference_mode(), OpNames() as ops:
        torch.testing.assert_close(fused(x), out, rtol=1e-4, atol=1e-5)
    assert "fcasearch_kernels.conv2d" not in ops.names
    with torch.no_grad():  # an edited weight is packed again
        fused.stem.conv1.weight.mul_(2.0)
    fuse_for_inference(fused, gemm="fcasearch")
    with torch.inference_mode():
        changed = fused.stem(x)
        fuse_for_inference(fused, gemm="onednn")
        torch.testing.assert_close(changed, fused.stem(x), rtol=1e-4, atol=1e-5)
