"""Small building blocks shared by the FcaFormer stem, ConvNeXt stages and FcaFormer stages.

Everything here follows ``fcaformer-spec.md``: Conv-BN is a bias-free ``Conv2d`` followed by
``BatchNorm2d`` (eps 1e-5), GELU is the exact (erf) form, and weights are initialized with a normal
of std 0.02 truncated at +-2 (which truncates nothing in practice).
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from fcasearch.cpuinfo import cpuinfo_field
from fcasearch.models.kernels import (
    conv_kernel_applies,
    dwconv_kernel_applies,
    inference_input,
    kernel_status,
    kernels_loaded,
    pack_conv,
    pack_linear,
)

__all__ = [
    "GEMM_LIBRARIES",
    "MLP_CHUNK_ELEMENTS",
    "ArgsCache",
    "ConvBN",
    "DropPath",
    "Mlp",
    "args_cache",
    "check_gemm_library",
    "conv_gelu",
    "default_gemm_library",
    "depthwise_conv",
    "drop_path_rates",
    "fast_path",
    "gemm_library",
    "inference_input",
    "init_weights",
    "layer_norm",
    "linear",
    "linear_add",
    "linear_gelu",
    "mlp_add",
    "onednn_fusion_available",
    "own_conv",
    "packed_weight",
    "packed_weights",
    "padded_conv",
    "resolve_gemm_library",
    "temporarily",
]


class ConvBN(nn.Module):
    """A bias-free ``Conv2d`` (``c``) followed by ``BatchNorm2d`` (``bn``), as in the reference.

    Args:
        in_chans: input channels.
        out_chans: output channels.
        kernel_size: square kernel side.
        stride: convolution stride.
        padding: zero padding on each side.
        groups: convolution groups (``in_chans`` for depthwise).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(
            in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chans, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(padded_conv(self.c, x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """The equivalent ``Conv2d`` with bias, using the BN running statistics (eval semantics)."""
        c, bn = self.c, self.bn
        inv_std = torch.rsqrt(bn.running_var + bn.eps)  # (O,)
        scale = bn.weight * inv_std  # (O,)
        fused = nn.Conv2d(
            c.in_channels,
            c.out_channels,
            c.kernel_size,
            c.stride,
            c.padding,
            dilation=c.dilation,
            groups=c.groups,
            bias=True,
            padding_mode=c.padding_mode,
        ).to(device=c.weight.device, dtype=c.weight.dtype)
        fused.weight.copy_(c.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


# ---- a CPU low-precision convolution backward bug ------------------------------------------------
# On CPU, the bfloat16 (autocast or bf16 weights) Conv2d backward computes a garbage weight
# gradient when the output is one column wide and a window reaches into the implicit zero padding:
# the kernel reads memory it never wrote, so the gradient depends on whatever the heap held (NaN,
# 1e30, or plausible values), for dense convolutions in any layout and depthwise ones on
# channels-last input. FcaFormer's token-merge conv (kernel 2s-1, stride s) hits it whenever a
# stage grid is narrower than s, e.g. fcaformer_nano at 32 px. Padding the input explicitly and
# convolving without padding computes the same values and avoids the faulty kernel; it is used
# only where the bug can strike (a tiny copy there), so inference and float32 are untouched.
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _cpu_compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a CPU convolution of ``x`` computes in (autocast's, if it is on)."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return x.dtype


def _needs_explicit_padding(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv(x)`` would take the faulty backward described above."""
    if x.device.type != "cpu" or not torch.is_grad_enabled() or x.ndim != 4:
        return False
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or not any(conv.padding):
        return False
    if not (x.requires_grad or conv.weight.requires_grad):
        return False
    if _cpu_compute_dtype(x) not in _LOW_PRECISION:
        return False
    width, k, s = x.shape[-1], conv.kernel_size[1], conv.stride[1]
    p, d = conv.padding[1], conv.dilation[1]
    return (width + 2 * p - d * (k - 1) - 1) // s + 1 == 1  # output width


def padded_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; where CPU low-precision training would hit the faulty backward above, the
    same convolution computed on an explicitly zero-padded input instead."""
    if not _needs_explicit_padding(conv, x):
        return conv(x)
    ph, pw = conv.padding
    xp = F.pad(x, (pw, pw, ph, ph))  # (B, C, H + 2ph, W + 2pw)
    return F.conv2d(xp, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


class DropPath(nn.Module):
    """Stochastic depth per sample: zero a residual branch with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


class Mlp(nn.Module):
    """The FcaFormer MLP: its own LayerNorm (eps 1e-5), Linear d->hidden, exact GELU, Linear back."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, lib: str = "torch") -> torch.Tensor:  # (B, N, d)
        """``mlp(x)`` (``lib``: the library of the Linear GEMMs, see :func:`gemm_library`)."""
        fc1, fc2 = self.fc1, self.fc2
        p1, p2 = (
            packed_weight(self, "fc1", fc1.weight, lib),
            packed_weight(self, "fc2", fc2.weight, lib),
        )
        h = linear_gelu(self.norm(x), fc1.weight, fc1.bias, False, lib, p1)
        return linear(h, fc2.weight, fc2.bias, lib, p2)

    def forward_add(
        self, x: torch.Tensor, residual: torch.Tensor, lib: str = "torch", kernel: bool = False
    ) -> torch.Tensor:
        """``residual + mlp(x)`` on the inference kernels (:func:`mlp_add`; ``kernel``: the norm
        on fcasearch's kernel, see :func:`layer_norm`)."""
        xn = layer_norm(self.norm, x, kernel)
        return mlp_add(self, xn, self.fc1, self.fc2, residual, lib)


# ---- inference kernels ------------------------------------------------------------------------
# In the inference form (fuse_for_inference) on CPU float32 without autograd, these helpers write
# activations in place and, for large activations, run Linear+GELU, Linear+residual and
# Conv+GELU as single oneDNN primitives (GELU in its exact erf form, as unfused). Small GEMMs go
# to MKL (F.linear) with an in-place pass instead: oneDNN's per-call cost (primitive setup and a
# weight reorder) outweighs the saved pass below about a thousand rows (measured on a 2-core
# Xeon), unless the model runs all its GEMMs on oneDNN (``gemm``, see further below).
# Everywhere else (GPU, other dtypes, autograd) they run the plain ops.
FUSED_MIN_ROWS = 1024


def onednn_fusion_available() -> bool:
    """Whether this torch build has the oneDNN fused Linear/Conv + pointwise CPU operators."""
    if not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    return hasattr(ops, "_linear_pointwise") and hasattr(ops, "_convolution_pointwise")


def fast_path(enabled: bool, x: torch.Tensor) -> bool:
    """Whether the inference kernels apply to ``x``: enabled, CPU float32, no autograd needed,
    and not under ``torch.compile`` or tracing (they cannot see through the oneDNN ops)."""
    return enabled and not torch.compiler.is_compiling() and inference_input(x)


def _fused_linear(x: torch.Tensor, lib: str) -> bool:
    """Whether the inference kernels run a Linear with its epilogue as one oneDNN primitive: a
    contiguous activation, and oneDNN chosen for every GEMM or, on torch's GEMM, ``x`` large
    (FUSED_MIN_ROWS)."""
    return (
        (lib == "onednn" or (lib == "torch" and x.numel() >= FUSED_MIN_ROWS * x.shape[-1]))
        and x.is_contiguous()
        and onednn_fusion_available()
    )


def _own_gemm(x: torch.Tensor, lib: str, packed: torch.Tensor | None) -> bool:
    """Whether a Linear runs on fcasearch's kernel: chosen, its packed weight at hand, ``x``
    contiguous (the kernel reads rows in place)."""
    return lib == "fcasearch" and packed is not None and x.is_contiguous()


def linear_gelu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    fast: bool,
    lib: str = "torch",
    packed: torch.Tensor | None = None,
) -> torch.Tensor:
    """``gelu(x @ weight.T + bias)``, exact GELU (``fast``: the inference kernels; ``lib``,
    ``packed``: the GEMM's library and packed weight, see :func:`linear`). On fcasearch's kernel
    the GELU is applied as the outputs are stored, in eager mode and under ``torch.compile``."""
    if _own_gemm(x, lib, packed):
        return torch.ops.fcasearch_kernels.linear(x, packed, weight.shape[0], bias, None, True)
    if not fast:
        return F.gelu(linear(x, weight, bias, lib, packed))
    if _fused_linear(x, lib):
        w = weight if packed is None else packed
        return torch.ops.mkldnn._linear_pointwise(x, w, bias, "gelu", [], "none")
    return torch.ops.aten.gelu_(F.linear(x, weight, bias))


def linear_add(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    fast: bool,
    lib: str = "torch",
    packed: torch.Tensor | None = None,
) -> torch.Tensor:
    """``residual + (x @ weight.T + bias)`` (``residual`` has the output's shape; on fcasearch's
    kernel it is added as the outputs are stored)."""
    if _own_gemm(x, lib, packed) and residual.stride(-1) == 1:
        return torch.ops.fcasearch_kernels.linear(x, packed, weight.shape[0], bias, residual, False)
    if not fast:
        return residual + linear(x, weight, bias, lib, packed)
    if _fused_linear(x, lib) and residual.is_contiguous():
        w = weight if packed is None else packed
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, bias, "add")
    return F.linear(x, weight, bias).add_(residual)


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor, kernel: bool) -> torch.Tensor:
    """``norm(x)``; ``kernel``: on fcasearch's CPU kernel where it applies (eager float32
    inference on a contiguous ``x``; :func:`fcasearch.models.kernels.layer_norm`). Under
    ``torch.compile`` the library's, which Inductor fuses with its neighbours."""
    # ``kernel`` is set by fuse_for_inference only, for the models' own 1-D affine LayerNorms
    # with frozen weights, so only the input is checked here (the full check costs 6 us a call);
    # a fused model unpickled in a process without the kernels has ``kernel`` set but none loaded
    if (
        kernel
        and kernels_loaded()
        and x.is_contiguous()
        and not torch.compiler.is_compiling()
        and inference_input(x)
    ):
        return torch.ops.fcasearch_kernels.layer_norm(x, norm.weight, norm.bias, norm.eps)
    return norm(x)


# The MLP's hidden activations (rows x 4d) are the largest tensors of an FcaFormer forward: 3.2 MB
# per image in the first ConvNeXt stage at 224. In the eager inference form the MLP runs in row
# chunks whose hidden activations stay below this many elements (1 MiB of float32), so each
# chunk's hidden rows are still in cache when the second GEMM reads them. On fcasearch's GEMM
# kernel the chunks also share one hidden buffer and write their results in place (no allocation
# or copy per chunk). Page faults: glibc maps a large block afresh whenever its heap has given the
# memory back to the OS, so in a fresh process FcaFormer-L1 at batch 1 takes 1,700-2,400 page
# faults a forward (2-core AMD EPYC), chunked or not; once a large batch has run (as after
# calibrate_batchnorm) glibc keeps the memory and a forward takes none.
MLP_CHUNK_ELEMENTS = 1 << 18


def mlp_add(
    owner: nn.Module,
    xn: torch.Tensor,
    fc1: nn.Linear,
    fc2: nn.Linear,
    residual: torch.Tensor,
    lib: str,
) -> torch.Tensor:
    """``residual + fc2(gelu(fc1(xn)))`` on the inference kernels, in row chunks (see
    :data:`MLP_CHUNK_ELEMENTS`); the result is written into ``xn`` where it is chunked.

    Args:
        owner: the module that keeps the packed weights (:func:`packed_weight`).
        xn: ``(..., d)`` normalized input, contiguous; the caller's to overwrite.
        fc1, fc2: the Linear layers ``d -> hidden -> d``.
        residual: tensor of ``xn``'s shape (any strides).
        lib: the GEMMs' library (see :func:`gemm_library`).
    """
    p1 = packed_weight(owner, "fc1", fc1.weight, lib)
    p2 = packed_weight(owner, "fc2", fc2.weight, lib)
    d = xn.shape[-1]
    rows = xn.numel() // d
    chunks = -(-rows * fc1.out_features // MLP_CHUNK_ELEMENTS)
    if chunks <= 1 or not xn.is_contiguous():
        h = linear_gelu(xn, fc1.weight, fc1.bias, True, lib, p1)
        return linear_add(h, fc2.weight, fc2.bias, residual, True, lib, p2)
    step = -(-rows // chunks)
    out, res = xn.view(rows, d), residual.reshape(rows, d)
    if _own_gemm(xn, lib, p1) and p2 is not None and res.stride(-1) == 1:
        # fcasearch's kernel writes into buffers: one hidden chunk for all chunks, and the
        # results straight into xn's rows (no allocation or copy per chunk)
        own, hidden = torch.ops.fcasearch_kernels, xn.new_empty((step, fc1.out_features))
        for i in range(0, rows, step):
            x_i, h = out[i : i + step], hidden[: min(step, rows - i)]
            own.linear_out(x_i, p1, fc1.out_features, fc1.bias, None, True, h)
            own.linear_out(h, p2, d, fc2.bias, res[i : i + step], False, x_i)
        return xn
    for i in range(0, rows, step):
        h = linear_gelu(out[i : i + step], fc1.weight, fc1.bias, True, lib, p1)
        out[i : i + step] = linear_add(h, fc2.weight, fc2.bias, res[i : i + step], True, lib, p2)
    return xn


# fcasearch's depthwise-conv kernel serves every depthwise conv of the eager inference form: its
# stride-1 3x3/5x5/7x7 path runs whole rows in blocks of 8 pixels (edges and partial channel
# vectors included), and at FcaFormer's sizes it is faster than oneDNN throughout. Measured on a
# 2-core AMD EPYC (Zen 4), 2 threads, kernel vs oneDNN (median of 5 paired runs of 100 calls):
# 56x56x64 7x7 146 vs 180 us, 28x28x128 7x7 100 vs 128 us, 56x56x72 7x7 155 vs 201 us, 56x56x128
# 3x3 stride 2 44 vs 73 us, 14x14x192 3x3 15 vs 45 us, 7x7x320 7x7 33 vs 54 us.


def depthwise_conv(
    conv: nn.Conv2d, x: torch.Tensor, kernel: bool, gelu: bool = False, fast: bool = False
) -> torch.Tensor:
    """``conv(x)``, then the exact GELU if ``gelu``, for a depthwise ``conv``.

    ``kernel``: on fcasearch's CPU kernel (:func:`fcasearch.models.kernels.dwconv2d`) where it
    applies (float32 inference on a channels-last map); ``fast``: otherwise the inference kernels
    (oneDNN Conv+GELU).
    """
    if kernel and dwconv_kernel_applies(conv, x):
        return torch.ops.fcasearch_kernels.dwconv2d(
            x, conv.weight, conv.bias, conv.stride[0], conv.padding[0], gelu
        )
    if gelu:
        return conv_gelu(x, conv, fast)
    return padded_conv(conv, x)


def own_conv(
    owner: nn.Module, key: str, conv: nn.Conv2d, x: torch.Tensor, gelu: bool
) -> torch.Tensor | None:
    """``conv(x)`` (then the exact GELU if ``gelu``) on fcasearch's dense-conv kernel
    (:func:`fcasearch.models.kernels.conv2d`, weights packed once on ``owner`` under ``key``),
    channels-last out; None where it does not apply (see ``conv_kernel_applies``) or, under
    ``torch.compile``, where no eager call packed the weight first."""
    if not conv_kernel_applies(conv, x):
        return None
    packed = packed_weight(owner, key, conv.weight, "fcasearch")
    if packed is None:
        return None
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    return torch.ops.fcasearch_kernels.conv2d(
        x, packed, conv.out_channels, conv.bias, k, s, p, gelu
    )


def conv_gelu(x: torch.Tensor, conv: nn.Conv2d, fast: bool) -> torch.Tensor:
    """``gelu(conv(x))`` for a plain zero-padded ``Conv2d`` (a folded Conv-BN)."""
    if not fast:
        return F.gelu(conv(x))
    if onednn_fusion_available():
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups,
            "gelu", [], "none",
        )  # fmt: skip
    return torch.ops.aten.gelu_(conv(x))


# ---- the library of the inference form's Linear GEMMs on CPU -----------------------------------
# torch runs F.linear on its BLAS (MKL in x86 builds). oneDNN, also in every x86 build, is the
# faster float32 GEMM on some CPUs. Measured on a 2-core AMD EPYC (Zen 4), torch 2.14.1, side by
# side (bench/model_speed.py --gemm-library torch onednn): a 2048^2 SGEMM at 211 GFLOP/s on oneDNN
# against 158 on MKL; FcaFormer-L1's 47 Linear GEMMs at batch 1, back to back, in 1.22x the
# compute floor against 1.41x; the L1 batch 1 forward compiled in 24.0 against 27.0 ms, eager in
# 28.7 against 29.8 ms. fcasearch's own Linear kernel (kernels/linear.cpp: packed weight panels,
# the bias, GELU and residual applied as outputs are stored) is faster again at FcaFormer's
# batch-1 shapes on that CPU (see bench/model_speed.py --gemm-library), so "auto" takes it there
# when the kernels are in use. On Intel CPUs MKL stays (earlier measurements there were made with
# it; the others are unmeasured there). fuse_for_inference(gemm=...) chooses; the model's Linear
# ops then use it in eager inference and under torch.compile. Training and autograd always use
# F.linear.
GEMM_LIBRARIES = ("auto", "torch", "onednn", "fcasearch")


def _cpu_vendor() -> str:
    """The CPU's vendor id (``AuthenticAMD``, ``GenuineIntel``, ...; Linux), else ``""``."""
    return cpuinfo_field("vendor_id")


def default_gemm_library(kernels: bool = False) -> str:
    """On AMD x86 CPUs ``"fcasearch"`` when fcasearch's kernels are in use (``kernels``), else
    ``"onednn"`` with oneDNN at hand; elsewhere ``"torch"`` (see above)."""
    if _cpu_vendor() != "AuthenticAMD":
        return "torch"
    if kernels and kernels_loaded():
        return "fcasearch"
    return "onednn" if onednn_fusion_available() else "torch"


def check_gemm_library(gemm: str) -> None:
    """Raise ValueError unless ``gemm`` is one of :data:`GEMM_LIBRARIES`."""
    if gemm not in GEMM_LIBRARIES:
        raise ValueError(f"gemm: {gemm!r} is not one of {', '.join(GEMM_LIBRARIES)}")


def resolve_gemm_library(gemm: str, kernels: bool = False) -> str:
    """``gemm`` checked against :data:`GEMM_LIBRARIES`, ``"auto"`` resolved for this machine
    (``kernels``: fcasearch's kernels are in use)."""
    check_gemm_library(gemm)
    if gemm == "onednn" and not onednn_fusion_available():
        raise ValueError(
            "gemm: 'onednn' needs a torch build with oneDNN (torch.backends.mkldnn); use 'torch'"
        )
    if gemm == "fcasearch" and not (kernels and kernels_loaded()):
        raise ValueError(
            f"gemm: 'fcasearch' needs fcasearch's CPU kernels (kernels 'auto' or 'on'), which are "
            f"{'off' if not kernels else kernel_status()}; use 'onednn' or 'torch'"
        )
    return default_gemm_library(kernels) if gemm == "auto" else gemm


def gemm_library(gemm: str, x: torch.Tensor) -> str:
    """The library a module whose fused form chose ``gemm`` runs its Linear ops on for ``x``:
    ``gemm`` for CPU float32 inputs needing no autograd and not traced by TorchScript (and, for
    ``"fcasearch"``, with the kernels loaded), else ``"torch"``. Eager and compiled alike."""
    if gemm == "torch" or not inference_input(x):
        return "torch"
    if gemm == "fcasearch" and not kernels_loaded():
        return "torch"
    return gemm


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lib: str = "torch",
    packed: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ weight.T + bias`` on ``lib`` (see :func:`gemm_library`): ``"onednn"`` as a oneDNN
    primitive, ``"fcasearch"`` on fcasearch's kernel, for contiguous ``x``, on ``packed``
    (``weight`` in the library's layout, :func:`packed_weight`); otherwise ``F.linear``."""
    if _own_gemm(x, lib, packed):
        return torch.ops.fcasearch_kernels.linear(x, packed, weight.shape[0], bias, None, False)
    if lib == "onednn" and x.is_contiguous():
        w = weight if packed is None else packed
        return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")
    return F.linear(x, weight, bias)


# ---- packed GEMM weights -----------------------------------------------------------------------
# oneDNN computes a Linear on its own blocked weight layout; given a plain (out, in) weight it
# converts it on every call. fcasearch's kernel reads the weight as panels of 32 columns. The
# inference form keeps a converted copy of each Linear weight for its library (one more copy of
# the Linear weights in memory) and passes that instead. Measured for oneDNN on a 2-core AMD EPYC
# (Zen 4), 2 threads, per GEMM: 196x192 @ 192x768 282 against 301 us, 49x320 @ 320x1280 249
# against 291 us, 3136x64 @ 64x256 499 against 603 us. Neither layout depends on the rows, so one
# copy serves every batch size.


class _ModuleCache:
    """Derived state a module keeps in ``entries``; copies and pickles empty (it is made again
    when used)."""

    def __init__(self) -> None:
        self.entries: dict = {}

    def __deepcopy__(self, memo: dict) -> _ModuleCache:
        return type(self)()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.entries = {}


class _PackedWeights(_ModuleCache):
    """A module's packed copies: (library, key) -> (packed, source data pointer, source version).
    Empty in a copy or a pickle (oneDNN's packed tensors have no storage to copy)."""


def module_walk(module: nn.Module) -> Iterator[tuple[nn.Module, dict]]:
    """Every module in ``module``'s tree with its ``__dict__``: a walk over the modules' own
    dicts, which the argument caches take on every call (``module.modules()`` costs 2x)."""
    stack: list[nn.Module | None] = [module]
    while stack:
        m = stack.pop()
        if m is not None:
            d = m.__dict__
            yield m, d
            stack += d["_modules"].values()


class ArgsCache(_ModuleCache):
    """A module's argument lists for kernel operators, kept between calls while nothing they are
    made of changed (see :meth:`get`); empty in a copy or a pickle, like the packed weights."""

    @staticmethod
    def _state(module: nn.Module, sources: tuple[torch.Tensor, ...]) -> tuple[tuple, tuple]:
        """Every module, parameter and buffer in ``module``'s tree (the objects themselves) and
        every module's ``eps``; the storage and version of ``sources``."""
        objects: list[object] = []
        settings: list[object] = []
        for m, d in module_walk(module):
            objects.append(m)
            objects += d["_parameters"].values()
            objects += d["_buffers"].values()
            settings.append(d.get("eps"))
        for t in sources:
            settings += (t.data_ptr(), -1 if t.is_inference() else t._version)
        return tuple(objects), tuple(settings)

    def get(
        self,
        module: nn.Module,
        key: object,
        sources: tuple[torch.Tensor, ...],
        build: Callable[[], object],
    ) -> object:
        """``build()``'s result, made again when any module, parameter or buffer of ``module``
        was replaced, a norm's ``eps`` changed, or one of ``sources`` (the weights of packed
        copies, see :func:`packed_weight`) got new storage or an in-place edit."""
        objects, settings = self._state(module, sources)
        entry = self.entries.get(key)
        if (
            entry is not None
            and entry[1] == settings
            and len(entry[0]) == len(objects)
            and all(map(operator.is_, entry[0], objects))
        ):
            return entry[2]
        value = build()
        self.entries[key] = (objects, settings, value)
        return value


def args_cache(owner: nn.Module) -> ArgsCache:
    """``owner``'s :class:`ArgsCache`, made on first use."""
    cache = owner.__dict__.get("_args_cache")
    if cache is None:
        cache = owner.__dict__["_args_cache"] = ArgsCache()
    return cache


def packed_weights(model: nn.Module) -> list[torch.Tensor]:
    """The packed copies that ``model``'s modules hold (see :func:`packed_weight`)."""
    return [
        entry[0]
        for m in model.modules()
        if (packs := m.__dict__.get("_packed_weights")) is not None
        for entry in packs.entries.values()
    ]


def _pack(weight: torch.Tensor, lib: str) -> torch.Tensor:
    w = weight.detach().contiguous()
    if lib == "fcasearch":  # a convolution's (Cout, Cin, k, k) for own_conv, else a Linear's
        return pack_conv(w) if w.dim() == 4 else pack_linear(w)
    return torch.ops.mkldnn._reorder_linear_weight(w)


def packed_weight(
    owner: nn.Module, key: str, weight: torch.Tensor, lib: str
) -> torch.Tensor | None:
    """``weight`` in the layout of the GEMM library ``lib`` (``"onednn"``, ``"fcasearch"``);
    None for ``"torch"``.

    The copy is kept on ``owner`` under ``key`` and made again when ``weight`` changed (new
    storage or an in-place edit; inference tensors have no version counter, so only new storage
    counts for them). Under ``torch.compile`` the copy made by an eager call is used as it is (the
    weights are frozen there; :func:`~fcasearch.models.compiled.compile_for_inference` runs one
    eager forward first); with none, None.
    """
    if lib not in ("onednn", "fcasearch"):
        return None
    packs = owner.__dict__.get("_packed_weights")
    if torch.compiler.is_compiling():
        entry = packs.entries.get((lib, key)) if packs is not None else None
        return entry[0] if entry is not None else None
    if packs is None:
        packs = owner.__dict__["_packed_weights"] = _PackedWeights()
    version = -1 if weight.is_inference() else weight._version
    entry = packs.entries.get((lib, key))
    if entry is None or entry[1] != weight.data_ptr() or entry[2] != version:
        with torch.no_grad():
            entry = packs.entries[(lib, key)] = (_pack(weight, lib), weight.data_ptr(), version)
    return entry[0]


@contextlib.contextmanager
def temporarily(modules: list[nn.Module], attr: str, value: object) -> Iterator[None]:
    """Set ``attr`` to ``value`` on each of ``modules`` while inside; each module's previous
    value is restored on exit."""
    before = [getattr(m, attr) for m in modules]
    for m in modules:
        setattr(m, attr, value)
    try:
        yield
    finally:
        for m, old in zip(modules, before):
            setattr(m, attr, old)


def drop_path_rates(rate: float, total_blocks: int) -> list[float]:
    """``linspace(0, rate, total_blocks)`` over all blocks of the network, in order."""
    return torch.linspace(0.0, float(rate), total_blocks, device="cpu").tolist()


def init_weights(module: nn.Module) -> None:
    """Reference init for one module: Conv2d/Linear weights N(0, 0.02) truncated at +-2, bias 0.

    LayerNorm and BatchNorm keep PyTorch's defaults (weight 1, bias 0); the FcaFormer-specific
    parameters (bias tables, scale factors, layer scales) are initialized by their own modules.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
