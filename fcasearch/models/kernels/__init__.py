"""fcasearch's own CPU kernels, compiled at run time for the machine that runs them.

Five kernels, for float32 inference on CPU, where the library operators spend much of their time
outside arithmetic at FcaFormer's batch-1 sizes (each source file says why and how):

* :func:`fca_attention` (``fca_attention.cpp``): the FcaFormer attention, ``softmax(q k^T * scale
  + bias) v`` over main and cross tokens; at L1's shapes 0.45-0.6x the time of ATen's CPU
  ``scaled_dot_product_attention``;
* :func:`dwconv2d` (``dwconv.cpp``): depthwise convolution on channels-last maps, optionally with
  the exact GELU, for the token merge, the local conv, the downsample's strided conv and the
  ConvNeXt 7x7;
* :func:`layer_norm` (``layernorm.cpp``): LayerNorm over the last dimension, for every norm of the
  eager inference form; 0.4-0.6x the time of ATen's at FcaFormer's larger sizes;
* :func:`linear` (``linear.cpp``): Linear layers on a weight packed once (:func:`pack_linear`),
  with the bias and the exact GELU or a residual add applied as the outputs are stored: the
  inference form's GEMM library ``"fcasearch"``;
* :func:`conv2d` (``conv.cpp``): dense convolution as an implicit GEMM on the same packed weights
  and micro-kernel (``gemm.h``), reading NCHW or channels-last input, for the conv stem.

And operators that chain them (``block.cpp``, through the C++ entry points of ``ops.h``): a whole
fused FcaFormer block (``fca_block``), ConvNeXt block (``convnext_block``), downsample between
stages (``downsample``) and conv stem (``stem``), which the eager inference form calls once each
where every step is on these kernels. The stem, the downsamples, the ConvNeXt blocks and the
FcaFormer block's part after attention run in bands of rows, each band through all its steps on
one thread with its intermediates in that core's cache (the early stages' maps are 0.4-3.2 MB a
step; on a shared host that traffic, more than the arithmetic, set their pace). Within
``fca_block`` the attention makes its bias from the block's relative-position segments as it reads
them (``fca_attention_relative``) instead of reading the frozen mask. ``network.cpp`` chains those
operators in turn: a fused FcaFormer's whole eager forward as one operator (``network``, see
:mod:`fcasearch.models.network`). The GEMM, the attention and the banded operators hand out their
tasks with work stealing (``parallel.h``): each thread starts on its own share, and one done early
takes the others' last tasks, since on a shared host the two cores' speeds differ from moment to
moment.

:func:`~fcasearch.models.fuse.fuse_for_inference` uses them where they are available.

The first use on a machine builds them with ``torch.utils.cpp_extension`` (a C++ compiler with
OpenMP, and ninja; 10-60 s) into a cache directory named after the sources, the torch version and
the CPU (the build targets this CPU's instruction set, so nodes with different CPUs never share a
binary): ``$FCASEARCH_KERNEL_CACHE`` or ``~/.cache/fcasearch/kernels``. Later processes load the
cached library in well under a second. Where they cannot be built (no compiler, no ninja, a failed
build) or ``FCASEARCH_KERNELS=0`` is set, :func:`load_kernels` returns False and
:func:`kernel_status` says why; the models then use the library operators (SDPA, oneDNN).
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from fcasearch.cpuinfo import cpu_model, cpuinfo_field

__all__ = [
    "attention_kernel_applies",
    "conv2d",
    "conv_kernel_applies",
    "dwconv2d",
    "dwconv_kernel_applies",
    "fca_attention",
    "inference_input",
    "kernel_cache_dir",
    "kernel_status",
    "kernels_loaded",
    "layer_norm",
    "layer_norm_kernel_applies",
    "linear",
    "load_kernels",
    "pack_conv",
    "pack_linear",
    "square_conv_applies",
]

_HERE = Path(__file__).parent
_SOURCES = tuple(
    _HERE / name
    for name in (
        "fca_attention.cpp",
        "dwconv.cpp",
        "layernorm.cpp",
        "linear.cpp",
        "conv.cpp",
        "block.cpp",
        "network.cpp",
    )
)
_HEADERS = (_HERE / "simd.h", _HERE / "gemm.h", _HERE / "ops.h", _HERE / "parallel.h")
_CFLAGS = ("-O3", "-march=native", "-fopenmp")
_lock = threading.Lock()
_state: dict[str, object] = {"loaded": None, "status": "not built yet (load_kernels builds it)"}


def _build_tag() -> str:
    """A hash of what the binary depends on: source, flags, torch, Python, compiler target, CPU."""
    h = hashlib.sha256()
    for path in (*_SOURCES, *_HEADERS):
        h.update(path.read_bytes())
    for part in (*_CFLAGS, torch.__version__, sys.version, platform.machine(), cpu_model(),
                 cpuinfo_field("flags")):  # fmt: skip
        h.update(part.encode())
    return h.hexdigest()[:16]


def kernel_cache_dir() -> Path:
    """Where built kernels are kept: ``$FCASEARCH_KERNEL_CACHE`` or ``~/.cache/fcasearch/kernels``."""
    root = os.environ.get("FCASEARCH_KERNEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "fcasearch" / "kernels"


def _why_not_buildable() -> str | None:
    """Why the kernels cannot be built here, or None."""
    if os.environ.get("FCASEARCH_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return "disabled by FCASEARCH_KERNELS=0"
    from torch.utils.cpp_extension import is_ninja_available

    from fcasearch.models.compiled import cpp_compiler_available

    if not cpp_compiler_available():
        return "no C++ compiler on PATH (install g++ or clang++)"
    if not is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return None


def load_kernels(verbose: bool = True) -> bool:
    """Build (first time on this machine) and load the kernels into this process; thread-safe.

    Args:
        verbose: say on stderr when a build starts and how it ended.

    Returns:
        Whether ``torch.ops.fcasearch_kernels`` is usable; if not, :func:`kernel_status` says why.
        A failed build is not retried in the same process.
    """
    with _lock:
        if _state["loaded"] is not None:
            return bool(_state["loaded"])
        reason = _why_not_buildable()
        if reason is not None:
            _state.update(loaded=False, status=f"unavailable: {reason}")
            return False
        tag = _build_tag()
        build_dir = kernel_cache_dir() / f"kernels-{tag}"
        cached = any(build_dir.glob("*.so"))
        if verbose and not cached:
            print(
                f"fcasearch: building the CPU kernels for this machine in {build_dir} "
                "(once per machine and torch version; 10-60 s)",
                file=sys.stderr,
                flush=True,
            )
        try:
            from torch.utils.cpp_extension import load

            build_dir.mkdir(parents=True, exist_ok=True)
            load(
                name=f"fcasearch_kernels_{tag}",
                sources=[str(p) for p in _SOURCES],
                extra_cflags=list(_CFLAGS),
                extra_ldflags=["-fopenmp"],
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=False,
            )
            _register_fake()
        except Exception as e:  # compiler errors arrive as RuntimeError, OSError, ImportError
            _state.update(loaded=False, status=f"unavailable: the build failed ({_gist(e)})")
            if verbose:
                print(
                    f"fcasearch: CPU kernels {_state['status']}; using the library operators",
                    file=sys.stderr,
                    flush=True,
                )
            return False
        _state.update(loaded=True, status=f"loaded from {build_dir}")
        return True


def _gist(error: Exception) -> str:
    """The telling line of a build error: the compiler's first ``error:`` line if there is one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = (
        [line for line in lines if "error:" in line.lower()] or lines or [type(error).__name__]
    )
    return telling[0][:300]


def kernel_status() -> str:
    """``"loaded from DIR"``, ``"unavailable: WHY"``, or ``"not built yet ..."``."""
    return str(_state["status"])


def _register_fake() -> None:
    """Output shapes for tracing (``torch.compile``, ``torch.export``)."""
    # torch < 2.4 names it impl_abstract
    register_fake = getattr(torch.library, "register_fake", None) or torch.library.impl_abstract

    @register_fake("fcasearch_kernels::fca_attention")
    def _(q, k, v, bias, scale):
        b, h, n, d = q.shape
        return q.new_empty((b, n, h, d))

    @register_fake("fcasearch_kernels::dwconv2d")
    def _(x, weight, bias, stride, padding, gelu):
        b, c, h, w = x.shape
        k = weight.shape[-1]
        size = (b, c, (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)
        return torch.empty(size, dtype=x.dtype, device=x.device).contiguous(
            memory_format=torch.channels_last
        )

    @register_fake("fcasearch_kernels::layer_norm")
    def _(x, weight, bias, eps):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @register_fake("fcasearch_kernels::pack_linear")
    def _(weight):
        n, k = weight.shape
        return weight.new_empty(((n + 31) // 32, k, 32))

    @register_fake("fcasearch_kernels::linear")
    def _(x, packed, out_features, bias, residual, gelu):
        return x.new_empty((*x.shape[:-1], out_features))

    @register_fake("fcasearch_kernels::conv2d")
    def _(x, packed, out_channels, bias, kernel_size, stride, padding, gelu):
        b, _, h, w = x.shape
        ho = (h + 2 * padding - kernel_size) // stride + 1
        wo = (w + 2 * padding - kernel_size) // stride + 1
        return torch.empty((b, out_channels, ho, wo), dtype=x.dtype, device=x.device).contiguous(
            memory_format=torch.channels_last
        )

    def _channels_last(b: int, c: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        return torch.empty((b, c, h, w), dtype=like.dtype, device=like.device).contiguous(
            memory_format=torch.channels_last
        )

    @register_fake("fcasearch_kernels::convnext_block")
    def _(x, params, cfg, eps):
        return _channels_last(*x.shape, x)

    @register_fake("fcasearch_kernels::downsample")
    def _(x, params, cfg):
        b, _, h, w = x.shape
        out, stride, padding = cfg
        k = params[2].shape[-1]
        ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
        return _channels_last(b, out, ho, wo, x)

    @register_fake("fcasearch_kernels::stem")
    def _(x, params, cfg):
        b, _, h, w = x.shape
        _, c2, k, s, p = cfg
        h1, w1 = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return _channels_last(b, c2, (h1 + 2 * p - k) // s + 1, (w1 + 2 * p - k) // s + 1, x)


def _ops(caller: str) -> Any:
    """``torch.ops.fcasearch_kernels`` for the wrapper ``caller``; RuntimeError (naming it and why)
    if the kernels are not loaded."""
    if not kernels_loaded():
        raise RuntimeError(f"{caller}: the kernels are {kernel_status()}; call load_kernels()")
    return torch.ops.fcasearch_kernels


def kernels_loaded() -> bool:
    """Whether :func:`load_kernels` has loaded the kernels into this process."""
    return _state["loaded"] is True


def inference_input(x: torch.Tensor) -> bool:
    """``x`` is CPU float32, needs no autograd and is not traced by TorchScript (the inputs that
    fcasearch's inference kernels, and oneDNN's fused ones in ``layers``, serve)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not (x.requires_grad and torch.is_grad_enabled())
        and not torch.jit.is_tracing()
    )


def attention_kernel_applies(q: torch.Tensor) -> bool:
    """Whether :func:`fca_attention` serves queries ``q`` (``(B, h, N, D)``): the kernels loaded,
    CPU float32, no autograd needed, not traced by TorchScript, ``D`` at most 128."""
    return kernels_loaded() and inference_input(q) and 0 < q.shape[-1] <= 128


def square_conv_applies(conv: torch.nn.Conv2d, x: torch.Tensor) -> bool:
    """What every convolution kernel needs (channel counts aside, for the operators that feed a
    conv from an earlier step): the kernels loaded, ``x`` a 4-D CPU float32 map
    needing no autograd, ``conv`` with square kernel, stride and zero padding, no dilation, and
    no gradient wanted for its weight."""
    k, s, p = conv.kernel_size, conv.stride, conv.padding
    return (
        kernels_loaded()
        and inference_input(x)
        and x.dim() == 4
        and k[0] == k[1]
        and s[0] == s[1]
        and not isinstance(p, str)
        and p[0] == p[1]
        and tuple(conv.dilation) == (1, 1)
        and conv.padding_mode == "zeros"
        and not (conv.weight.requires_grad and torch.is_grad_enabled())
    )


def dwconv_kernel_applies(conv: torch.nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether :func:`dwconv2d` computes ``conv(x)``: the kernels loaded, ``x`` a CPU float32
    channels-last map needing no autograd, ``conv`` depthwise with square kernel, stride and zero
    padding, no dilation."""
    return (
        square_conv_applies(conv, x)
        and x.is_contiguous(memory_format=torch.channels_last)
        and conv.groups == conv.in_channels == conv.out_channels == x.shape[1]
    )


def conv_kernel_applies(conv: torch.nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether :func:`conv2d` computes ``conv(x)``: the kernels loaded, ``x`` a 4-D CPU float32
    map needing no autograd (any memory layout), ``conv`` dense (one group) with square kernel,
    stride and zero padding, no dilation."""
    return square_conv_applies(conv, x) and conv.groups == 1 and x.shape[1] == conv.in_channels


def layer_norm_kernel_applies(norm: torch.nn.LayerNorm, x: torch.Tensor) -> bool:
    """Whether :func:`layer_norm` computes ``norm(x)``: the kernels loaded, ``x`` a contiguous CPU
    float32 tensor needing no autograd, ``norm`` over the last dimension with weight and bias."""
    return (
        kernels_loaded()
        and inference_input(x)
        and x.is_contiguous()
        and len(norm.normalized_shape) == 1
        and norm.weight is not None
        and norm.bias is not None
        and not (norm.weight.requires_grad and torch.is_grad_enabled())
    )


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """``F.layer_norm(x, (C,), weight, bias, eps)`` over the last dimension ``C``.

    Args:
        x: ``(..., C)`` float32 on CPU, contiguous; ``weight``, ``bias``: ``(C,)``.
        eps: added to the (population) variance.

    Raises:
        RuntimeError: the kernels are not loaded, or the inputs break the rules above.
    """
    return _ops("layer_norm").layer_norm(x, weight, bias, float(eps))


def pack_linear(weight: torch.Tensor) -> torch.Tensor:
    """A Linear weight ``(N, K)`` as :func:`linear` reads it: ``(ceil(N/32), K, 32)`` panels of 32
    output columns, zero past ``N``. An ordinary tensor (it copies and pickles)."""
    return _ops("pack_linear").pack_linear(weight)


def linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    out_features: int,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    gelu: bool = False,
) -> torch.Tensor:
    """``x @ W.T + bias``, then the exact GELU (``gelu``) or ``+ residual``, for ``W`` packed by
    :func:`pack_linear`.

    Args:
        x: ``(..., K)`` float32 on CPU, contiguous.
        packed: ``pack_linear(W)`` for ``W`` of shape ``(out_features, K)``.
        out_features: ``N``, the rows of ``W``.
        bias: ``(N,)`` or None; residual: ``(..., N)`` with unit stride along ``N``, or None.
        gelu: apply the exact GELU (not together with ``residual``).

    Raises:
        RuntimeError: the kernels are not loaded, or the inputs break the rules above.
    """
    return _ops("linear").linear(x, packed, int(out_features), bias, residual, gelu)


def pack_conv(weight: torch.Tensor) -> torch.Tensor:
    """A convolution weight ``(Cout, Cin, k, k)`` as :func:`conv2d` reads it: the Linear panels
    (:func:`pack_linear`) of the weight ordered ``(Cout, ky, kx, Cin)``."""
    return pack_linear(weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1))


def conv2d(
    x: torch.Tensor,
    packed: torch.Tensor,
    out_channels: int,
    bias: torch.Tensor | None,
    kernel_size: int,
    stride: int,
    padding: int,
    gelu: bool = False,
) -> torch.Tensor:
    """``conv2d(x, W, bias, stride, padding)`` for ``W`` packed by :func:`pack_conv`, then the
    exact GELU if ``gelu``; the output is channels-last.

    Args:
        x: ``(B, Cin, H, W)`` float32 on CPU, any strides (NCHW and channels-last are read as
            they lie).
        packed: ``pack_conv(W)`` for ``W`` of shape ``(out_channels, Cin, k, k)``.
        out_channels: ``Cout``; ``bias``: ``(Cout,)`` or None.
        kernel_size, stride, padding: square kernel side ``k``, stride and zero padding.

    Raises:
        RuntimeError: the kernels are not loaded, or the inputs break the rules above.
    """
    return _ops("conv2d").conv2d(
        x, packed, int(out_channels), bias, int(kernel_size), int(stride), int(padding), gelu
    )


def fca_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` with heads last: ``(B, N, h, D)``.

    Args:
        q: ``(B, h, N, D)`` queries; ``k``, ``v``: ``(B, h, T, D)``; ``bias``: ``(B or 1, h, N,
            T)``; all float32 on CPU with unit stride along the last dimension.
        scale: the logits' factor (``D ** -0.5`` for standard attention).

    Raises:
        RuntimeError: the kernel is not loaded (call :func:`load_kernels`), or the inputs break the
            rules above (the message names the input).
    """
    return _ops("fca_attention").fca_attention(q, k, v, bias, float(scale))


def dwconv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    padding: int,
    gelu: bool = False,
) -> torch.Tensor:
    """Depthwise ``conv2d(x, weight, bias, stride, padding, groups=C)``, then the exact GELU if
    ``gelu``; channels-last in and out.

    Args:
        x: ``(B, C, H, W)`` float32 on CPU, channels-last contiguous.
        weight: ``(C, 1, k, k)``; ``bias``: ``(C,)`` or None.
        stride, padding: square stride and zero padding.

    Raises:
        RuntimeError: the kernels are not loaded, or the inputs break the rules above.
    """
    return _ops("dwconv2d").dwconv2d(x, weight, bias, int(stride), int(padding), gelu)
