"""Latency of FcaFormer L1/L2 (inference form) against this machine's compute floor.

The floor of one forward pass is ``2 * MACs / R``: the multiply-adds of the network (convolutions,
linear layers, attention matmuls; ``fcasearch.measure.counting``) at the float32 matrix-multiply
rate ``R`` measured here, in the same run (a square SGEMM, interleaved with the model timings
round by round: 2048x2048 products before and after each round). ``R`` is the fastest of the
float32 GEMM libraries at hand, all timed: ``torch.mm`` (MKL in x86 builds), oneDNN and, where it
builds, fcasearch's own Linear kernel. Which is fastest depends on the machine: on a 2-core AMD
EPYC (Zen 4), oneDNN ran the 2048^2 SGEMM at about 210 GFLOP/s and MKL at about 165; a floor from
a slower library would flatter every ratio. The ratio latency / floor is printed per model and
batch size, as the median over rounds; each round's ratio uses that round's GEMM rate, so machine
noise (these machines are shared) largely cancels. Latency is the median of ``--repeats`` calls
after 2 warm-up calls, per round.

Models are measured in their deployable form: ``fuse_for_inference`` (Conv-BN and layer scales
folded, attention bias frozen, oneDNN fused kernels; the Linear GEMMs on the library that
``--gemm-library`` names, by default the one ``"auto"`` picks for this CPU; attention, depthwise
convs, LayerNorms (and on AMD CPUs the Linear GEMMs) on fcasearch's CPU kernels where they build,
or as ``--kernels`` says; blocks whose every step is on those kernels as one operator each, and
the whole forward as one operator where every part is one, unless ``--block-ops`` says
otherwise), eval, ``torch.inference_mode``, fixed threads.
BN statistics are calibrated first (``calibrate_batchnorm``): an untrained FcaFormer's late-stage
activations are ~1e-20 and would run on denormal floats, which no trained model does.

It also times the compiled inference form (``compile_for_inference``: Inductor with frozen
weights and, on CPU, the C++ wrapper; ``--compiled l1b1`` by default, ``all`` or ``none``); its
compilation (about 20 s a case) is done before the timed rounds.

For context it also times (unless ``--no-reference``) a straightforward re-implementation of the
reference forward (NCHW, Conv-BN unfused, queries for the cross tokens, bias gathered every call,
explicit softmax) loaded with the same weights, and the GEMM rate at L1's main MLP shape. And it
prints what L1's Linear GEMMs at batch 1 cost on their own, in units of that round's floor (their
shapes recorded from one forward; each with its own weights; both libraries; every round): each
timed alone with warm caches, and all of them back to back in model order, as a forward meets
them. The second is a lower bound on what a forward built on these libraries spends in its GEMMs;
the other MACs (convolutions, attention matmuls) need at least their share of the floor; what the
target leaves after both is the most a forward can spend on its elementwise work and overhead.

``--malloc-tune`` keeps freed memory in glibc's heap (process-wide; it removes the page faults
that large-batch activations otherwise take on every call).

Run: ``python bench/model_speed.py`` (about 50 s on 2 idle cores; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fcasearch.cpuinfo import cpu_model
from fcasearch.measure.counting import count_macs
from fcasearch.models import (
    CompileError,
    build_model,
    calibrate_batchnorm,
    compile_for_inference,
    fuse_for_inference,
    get_spec,
    to_reference_state_dict,
)
from fcasearch.models.fuse import KERNEL_CHOICES
from fcasearch.models.kernels import linear as fcasearch_linear
from fcasearch.models.kernels import load_kernels, pack_linear
from fcasearch.models.layers import GEMM_LIBRARIES, onednn_fusion_available
from fcasearch.models.network import network_in_use
from fcasearch.spec import CONV, ArchSpec

MODELS = {"L1": "fcaformer_l1", "L2": "fcaformer_l2"}


def gemm_kernels(m: int, k: int, n: int) -> dict[str, Callable[[], object]]:
    """A float32 product of an (m x k) input with an (n x k) Linear weight, transposed (what a
    Linear layer computes), per GEMM library at hand: ``torch.mm`` (torch's BLAS, MKL on x86),
    where available oneDNN (``mkldnn._linear_pointwise``) and fcasearch's Linear kernel (its
    weight packed once, as the inference form keeps it)."""
    x, weight, out = torch.randn(m, k), torch.randn(n, k), torch.empty(m, n)
    kernels: dict[str, Callable[[], object]] = {
        "torch.mm": lambda: torch.mm(x, weight.t(), out=out)
    }
    if onednn_fusion_available():
        kernels["oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(
            x, weight, None, "none", [], ""
        )
    if load_kernels(verbose=False):
        packed = pack_linear(weight)
        kernels["fcasearch"] = lambda: fcasearch_linear(x, packed, n)
    return kernels


def gemm_rates(kernel: Callable[[], object], flops: int, reps: int) -> list[float]:
    """FLOP/s of ``reps`` calls of ``kernel`` (``flops`` each), after one warm-up call."""
    kernel()
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        kernel()
        rates.append(flops / (time.perf_counter() - t0))
    return rates


class GemmShapes(TorchDispatchMode):
    """Records the (rows, inner, cols) of every matrix product of a Linear layer (``linear``,
    ``addmm`` or ``mm``) dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        aten = torch.ops.aten
        if func is aten.linear.default:
            x, weight = args[:2]
            self.shapes.append((x.numel() // x.shape[-1], weight.shape[1], weight.shape[0]))
        elif func in (aten.addmm.default, aten.mm.default):
            a, b = args[-2:] if func is aten.addmm.default else args[:2]
            self.shapes.append((a.shape[0], a.shape[1], b.shape[1]))
        return func(*args, **(kwargs or {}))


class LinearGemms:
    """The Linear GEMMs of one forward (shapes from :class:`GemmShapes`, in order), each with its
    own input, weight and output, timed per library (see :func:`gemm_kernels`)."""

    def __init__(self, shapes: list[tuple[int, int, int]]) -> None:
        self.count = len(shapes)
        self.kernels = [gemm_kernels(*shape) for shape in shapes]
        self.flops = [2 * m * k * n for m, k, n in shapes]

    def alone(self, reps: int = 10) -> dict[str, float]:
        """Seconds in all when each GEMM is timed alone (median of ``reps``, caches warm), per
        library and ``best`` (the fastest library for each GEMM)."""
        total: dict[str, float] = {"best": 0.0}
        for kernels, flops in zip(self.kernels, self.flops):
            times = {
                lib: flops / statistics.median(gemm_rates(kernel, flops, reps))
                for lib, kernel in kernels.items()
            }
            for lib, t in times.items():
                total[lib] = total.get(lib, 0.0) + t
            total["best"] += min(times.values())
        return total

    def in_sequence(self, reps: int = 5) -> dict[str, float]:
        """Seconds for all of them back to back in model order (median of ``reps`` runs), per
        library: each GEMM then finds the caches as the previous ones left them, as in a forward."""
        total = {}
        for lib in self.kernels[0]:
            sequence = [kernels[lib] for kernels in self.kernels]
            times = []
            for _ in range(reps + 1):  # the first run warms up
                t0 = time.perf_counter()
                for kernel in sequence:
                    kernel()
                times.append(time.perf_counter() - t0)
            total[lib] = statistics.median(times[1:])
        return total


def tune_malloc() -> str:
    """Keep freed memory in glibc's heap (no munmap/trim between forwards): large activations
    then do not page-fault on every call. Process-wide; opt-in (``--malloc-tune``)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 32 * 2**20) and libc.mallopt(m_trim_threshold, 2**30)
    return "glibc mallopt(M_MMAP_THRESHOLD=32 MiB, M_TRIM_THRESHOLD=1 GiB)" + (
        "" if ok else " FAILED"
    )


def latency(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Wall times (s) of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def reference_style(
    spec: ArchSpec, sd: dict[str, torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A plain forward in the reference's manner, reading the official state dict."""
    idx = {}
    for s, st in enumerate(spec.stages):
        if st.kind != CONV:
            rh, rw = spec.grid(s)
            r, c = torch.arange(rh).repeat_interleave(rw), torch.arange(rw).repeat(rh)
            idx[s] = (r[:, None] - r[None, :]).abs() * rw + (c[:, None] - c[None, :]).abs()

    def conv_bn(x, p, stride=1, pad=0, groups=1):
        x = F.conv2d(x, sd[f"{p}.c.weight"], None, stride, pad, 1, groups)
        return F.batch_norm(x, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"], sd[f"{p}.bn.bias"], False, 0.0, 1e-5)  # fmt: skip

    def ln(x, p, eps=1e-5):
        return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps)

    def lin(x, p):
        return F.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = conv_bn(F.gelu(conv_bn(x, "patch_embed.seq.0", 2, 1)), "patch_embed.seq.2", 2, 1)
        for s, st in enumerate(spec.stages):
            b, c, hh, ww = x.shape
            if st.kind == CONV:
                for j in range(st.depth):
                    p = f"layer_{s}.blocks.{j}"
                    y = F.conv2d(x, sd[f"{p}.dwconv.weight"], sd[f"{p}.dwconv.bias"], 1, 3, 1, c)
                    y = lin(F.gelu(lin(ln(y.permute(0, 2, 3, 1), f"{p}.norm", 1e-6), f"{p}.pwconv1")), f"{p}.pwconv2")  # fmt: skip
                    x = x + (sd[f"{p}.gamma"] * y).permute(0, 3, 1, 2)
            else:
                t, emitted, n, h = x.flatten(2).transpose(1, 2), {}, hh * ww, st.heads
                for j in range(st.depth):
                    p = f"layer_{s}.blocks.{j}"
                    xs = ln(t, f"{p}.norm1")
                    if st.sources(j):
                        cross = torch.cat([emitted[i] for i in st.sources(j)], dim=1)
                        xs = torch.cat(
                            [xs, ln(cross * sd[f"{p}.s_scale_factors"], f"{p}.s_norm")], 1
                        )
                    qkv = lin(xs, f"{p}.qkv").reshape(b, xs.shape[1], 3, h, c // h).permute(2, 0, 3, 1, 4)  # fmt: skip
                    q, k, v = qkv[0][:, :, :n], qkv[1], qkv[2]
                    bias = sd[f"{p}.attention_biases"][:, idx[s]]  # gathered on every call
                    if st.sources(j):
                        stb = sd[f"{p}.s_token_bias"]
                        bias = torch.cat(
                            [bias.unsqueeze(0), stb.expand(1, h, n, stb.shape[-1])], -1
                        )
                    attn = ((q * (c // h) ** -0.5) @ k.transpose(-2, -1) + bias).softmax(-1)
                    out = lin((attn @ v).transpose(1, 2).reshape(b, n, c), f"{p}.proj")
                    t = t + sd[f"{p}.gamma_1"] * out
                    grid = t.transpose(1, 2).reshape(b, c, hh, ww)
                    if f"{p}.dw_conv.weight" in sd:
                        y = F.conv2d(grid, sd[f"{p}.dw_conv.weight"], None, 4, 3, 1, c)
                        emitted[j] = y.flatten(2).transpose(1, 2)
                    t = conv_bn(grid, f"{p}.local_conv", 1, 1, c).flatten(2).transpose(1, 2)
                    y = lin(F.gelu(lin(ln(ln(t, f"{p}.norm2"), f"{p}.mlp.norm"), f"{p}.mlp.fc1")), f"{p}.mlp.fc2")  # fmt: skip
                    t = t + sd[f"{p}.gamma_2"] * y
                x = t.transpose(1, 2).reshape(b, c, hh, ww)
            if s + 1 < len(spec.stages):
                p, o = f"layer_{s}.downsample", spec.stages[s + 1].width
                x = conv_bn(F.gelu(conv_bn(F.gelu(conv_bn(x, f"{p}.conv1")), f"{p}.conv2", 2, 1, o)), f"{p}.conv3")  # fmt: skip
        return lin(ln(x.flatten(2).mean(-1), "norm_head"), "head")

    return forward


def compiled_case(
    fused: torch.nn.Module, x: torch.Tensor, check: tuple[torch.Tensor, torch.Tensor] | None
) -> Callable[[], object] | None:
    """``compile_for_inference`` of a copy of the fused model for ``x``'s shape, or None (reason
    printed); ``check``: an input of that shape and the unfused model's output on it."""
    t0 = time.perf_counter()
    try:
        compiled = compile_for_inference(copy.deepcopy(fused), x)
    except CompileError as e:
        print(f"  compiled form skipped: {e}")
        return None
    diff = ""
    if check is not None:
        with torch.inference_mode():
            diff = (
                f", max |diff| vs unfused {(compiled(check[0]) - check[1]).abs().max().item():.2e}"
            )
    print(
        f"  compiled inference form for batch {x.shape[0]}: {time.perf_counter() - t0:.0f} s{diff}"
    )
    return lambda c=compiled, x=x: c(x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per model per round")
    ap.add_argument("--gemm", type=int, default=2048, help="side of the square SGEMM for the rate")
    ap.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip the reference-style forward (timed for context at L1 b1)",
    )
    ap.add_argument("--target", type=float, default=1.6)
    ap.add_argument(
        "--gemm-library",
        nargs="+",
        choices=GEMM_LIBRARIES,
        default=["auto"],
        help="library of the inference form's Linear GEMMs (fuse_for_inference(gemm=...)); "
        "several: each is timed, side by side (cases named MODEL/LIBRARY)",
    )
    ap.add_argument(
        "--kernels",
        nargs="+",
        choices=KERNEL_CHOICES,
        default=["auto"],
        help="fcasearch's CPU kernels for attention and depthwise convs in the inference form "
        "(fuse_for_inference(kernels=...)): auto (where they build), on, off (SDPA, oneDNN); "
        "several: each is timed, side by side (cases named MODEL/kernels-CHOICE)",
    )
    ap.add_argument(
        "--block-ops",
        nargs="+",
        choices=["on", "blocks", "off"],
        default=["on"],
        help="fuse_for_inference(block_ops=...): on, each fused block as one kernel operator "
        "where all its steps are on fcasearch's kernels, and the whole eager forward as one "
        "where every part is one (models/network.py); blocks, the block operators only (one "
        "Python call each); off, a Python call per step; several: each is timed, side by side "
        "(cases named MODEL/blocks-CHOICE)",
    )
    ap.add_argument(
        "--malloc-tune",
        action="store_true",
        help="keep freed memory mapped (glibc mallopt): removes page faults at large batch",
    )
    ap.add_argument(
        "--compiled",
        choices=["none", "l1b1", "all"],
        default="l1b1",
        help="also time the compiled inference form (compile_for_inference; about 25 s of "
        "compilation per model and batch): for L1 b1 only (default), every case, or none",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 repeats, 64 px")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.repeats, args.img, args.gemm = 1, 2, 64, 512
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    allocator = tune_malloc() if args.malloc_tune else "default allocator"

    cases, floors_macs, l1_gemms = [], {}, []
    for tag in args.models:
        spec = get_spec(MODELS[tag], img_size=args.img)
        model = calibrate_batchnorm(build_model(spec))
        ref_sd = {k: v.clone() for k, v in to_reference_state_dict(model).items()}
        x1 = torch.randn(1, 3, args.img, args.img)
        with torch.inference_mode(), GemmShapes() as recorder:
            unfused = model(x1)
        if tag == "L1":
            l1_gemms = recorder.shapes
        floors_macs[tag] = count_macs(spec)
        choices = itertools.product(args.gemm_library, args.kernels, args.block_ops)
        for library, kernels, blocks in choices:
            name = "/".join(
                [tag]
                + ([library] if len(args.gemm_library) > 1 else [])
                + ([f"kernels-{kernels}"] if len(args.kernels) > 1 else [])
                + ([f"blocks-{blocks}"] if len(args.block_ops) > 1 else [])
            )
            fused = fuse_for_inference(
                copy.deepcopy(model), gemm=library, kernels=kernels, block_ops=blocks != "off"
            )
            if blocks == "blocks":
                fused.block_kernel = False  # the model's own switch: the network operator
            with torch.inference_mode():
                diff = (fused(x1) - unfused).abs().max().item()
            one_op = fused.gemm == "fcasearch" and any(
                getattr(m, "block_kernel", False) for m in fused.modules()
            )
            how = "a Python call per step"
            if one_op:
                how = "one operator (network)" if network_in_use(fused) else "one operator each"
            print(
                f"{name}: {spec.short()} | arch_id {spec.arch_id} | Linear GEMMs on {fused.gemm}"
                f" | attention, depthwise convs, LayerNorms on {fused.kernels_note}"
                f" | eager forward: blocks {how}"
                f" | fused vs unfused max |diff| {diff:.2e}"
            )
            for b in args.batches:
                x = torch.randn(b, 3, args.img, args.img)
                cases.append((name, b, (lambda m=fused, x=x: m(x)), floors_macs[tag] * b))
                if args.compiled == "all" or (args.compiled == "l1b1" and (tag, b) == ("L1", 1)):
                    compiled = compiled_case(fused, x, (x1, unfused) if b == 1 else None)
                    if compiled is not None:
                        cases.append((f"{name}-compiled", b, compiled, floors_macs[tag] * b))
        if args.reference and tag == "L1":
            ref = reference_style(spec, ref_sd)
            with torch.inference_mode():
                rdiff = (ref(x1) - unfused).abs().max().item()
            print(f"{tag}: reference-style forward vs unfused max |diff| {rdiff:.2e}")
            cases.append(("L1-reference-style", 1, (lambda r=ref, x=x1: r(x)), floors_macs[tag]))

    # The L1 MLP GEMM at batch 1 (196 tokens, 192 -> 768), for context only.
    shape = (196 * args.img**2 // 224**2 or 1, 192, 768)
    square = gemm_kernels(args.gemm, args.gemm, args.gemm)
    at_shape = gemm_kernels(*shape)
    square_flops, shape_flops = 2 * args.gemm**3, 2 * shape[0] * shape[1] * shape[2]
    lib_rates = {lib: [] for lib in square}  # per library, one median per round
    rates, shape_rates = [], {lib: [] for lib in at_shape}
    results = {(c[0], c[1]): [] for c in cases}
    gemms = LinearGemms(l1_gemms)
    alone, in_sequence = [], []  # L1 b1's GEMMs per round, in units of the round's floor
    with torch.inference_mode():
        for _ in range(args.rounds):
            before = {lib: gemm_rates(k, square_flops, reps=5) for lib, k in square.items()}
            timed = [statistics.median(latency(c[2], 2, args.repeats)) for c in cases]
            for lib, k in square.items():  # bracket the round
                after = gemm_rates(k, square_flops, reps=5)
                lib_rates[lib].append(statistics.median(before[lib] + after))
            rate = max(r[-1] for r in lib_rates.values())  # the fastest library this round
            rates.append(rate)
            for lib, k in at_shape.items():
                shape_rates[lib] += gemm_rates(k, shape_flops, reps=20)
            for (tag, b, _, macs), med in zip(cases, timed):
                results[(tag, b)].append((med, 2 * macs / rate))
            if gemms.count:
                floor = 2 * floors_macs["L1"] / rate
                alone.append({k: t / floor for k, t in gemms.alone().items()})
                in_sequence.append({k: t / floor for k, t in gemms.in_sequence().items()})

    def per_lib(table: dict[str, list[float]]) -> str:
        return ", ".join(f"{lib} {statistics.median(r) / 1e9:.1f}" for lib, r in table.items())

    print()
    print(f"machine: {cpu_model()}, torch {torch.__version__}, threads {args.threads}, {allocator}")
    print(f"float32 GEMM {args.gemm}x{args.gemm}: {statistics.median(rates) / 1e9:.1f} GFLOP/s, the fastest library per round (median of {args.rounds} rounds, {min(rates) / 1e9:.1f}-{max(rates) / 1e9:.1f}); per library: {per_lib(lib_rates)} GFLOP/s")  # fmt: skip
    print(f"  context: at L1's MLP GEMM shape {shape[0]}x{shape[1]} @ {shape[1]}x{shape[2]}: {per_lib(shape_rates)} GFLOP/s")  # fmt: skip
    print(
        "floor = 2 * MACs / GEMM rate; MACs/image: "
        + ", ".join(f"{t} {m:,}" for t, m in floors_macs.items())
    )
    for (tag, b), rows in results.items():
        lat = statistics.median(r[0] for r in rows)
        floor = statistics.median(r[1] for r in rows)
        ratios = [r[0] / r[1] for r in rows]
        ratio = statistics.median(ratios)
        # the target holds for L1 at batch 1, in both deployable forms: eager and compiled
        l1 = tag.split("/")[0].split("-")[0] == "L1" and "reference" not in tag
        form = "compiled" if tag.endswith("-compiled") else "eager"
        target = f"target <= {args.target}x, {form}" if l1 and b == 1 else "context"
        print(
            f"{tag} b{b} fp32 {args.img}: {lat * 1e3:.1f} ms | floor {floor * 1e3:.1f} ms | "
            f"ratio {ratio:.2f}x ({target}) | rounds {min(ratios):.2f}-{max(ratios):.2f}x"
        )
    # side-by-side choices (--gemm-library, --kernels, --block-ops): each against the first,
    # round by round
    variants = [c for c in results if "/" in c[0]]
    for tag, b in variants:
        model, choice = tag.split("/", 1)
        suffix = "-compiled" if choice.endswith("-compiled") else ""
        first = next(c for c in variants if c[0].startswith(model + "/") and c[1] == b
                     and c[0].endswith("-compiled") == bool(suffix))  # fmt: skip
        if (tag, b) == first:
            continue
        paired = [r[0] / f[0] for r, f in zip(results[(tag, b)], results[first])]
        print(
            f"{tag} b{b} against {first[0]}: time ratio {statistics.median(paired):.3f} "
            f"(median of {len(paired)} rounds, {min(paired):.3f}-{max(paired):.3f})"
        )
    if alone:  # what L1's GEMMs take, in units of the floor

        def shares(rows: list[dict[str, float]]) -> dict[str, float]:
            return {k: statistics.median(r[k] for r in rows) for k in rows[0]}

        each, seq = shares(alone), shares(in_sequence)
        libs = ", ".join(f"{k} {v:.2f}x" for k, v in each.items() if k != "best")
        # the other MACs (convolutions, attention matmuls) take their share of the floor at least
        other = 1 - sum(m * k * n for m, k, n in l1_gemms) / floors_macs["L1"]
        left = args.target - min(seq.values()) - other
        print(
            f"L1 b1, its {gemms.count} Linear GEMMs (own weights each), in units of the floor: "
            f"each timed alone {each['best']:.2f}x with the fastest library per GEMM ({libs}); "
            "back to back in model order "
            + ", ".join(f"{k} {v:.2f}x" for k, v in seq.items())
            + f". The other {other:.0%} of the MACs (convolutions, attention) take at least "
            f"{other:.2f}x, so a {args.target}x forward leaves at most {left:.2f}x the floor for "
            "normalization, activations, softmax, copies and per-op overhead"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
