"""FcaFormer L1/L2 on each deployment runtime against a reference-style forward, side by side.

For each model and batch size, one model as a measurement builds it (trained-like layer scales,
norms and biases, so every block shapes the outputs the runtimes are checked on) and calibrated
(BN statistics from random inputs: an untrained FcaFormer's late activations are tiny floats) is
prepared on each runtime of :mod:`fcasearch.runtime` (``eager``: the folded form under
``torch.inference_mode``; ``compile``: Inductor with frozen weights; ``onnxruntime``: torch.onnx
export run in an ONNX Runtime session, CPU provider), every one checked against eager, and timed
against :func:`reference_forward.reference_forward` (the official model's manner: NCHW, Conv-BN
unfused, queries for the cross tokens, bias gathered every call, explicit softmax) reading the
same weights.

All forms of one case are timed in interleaved rounds in one process: each round calls every form
once, back to back, ``--repeats`` times (in a shuffled order each time), and takes each
form's median; a round's ratio compares two forms of that round, so machine noise that lasts longer
than a few calls largely cancels. Each printed line gives a runtime's median latency, its ratio to
the reference-style forward (reference time / runtime time: above 1 is faster) and, for every form but eager
(eager-sgemm, compile, onnxruntime), to eager; the range of the ratio over rounds; the same ratio of process CPU time
(on a host shared with other work it moves less than wall time; with several threads it includes
the time threads spend waiting for each other); the CPU vendor and model; the runtime's version.
Target (issue 19): eager >= 1.3x the reference-style forward at batch 1 and 8 for L1 and L2 at
224 px on 2 threads.

``eager-sgemm`` (left out with ``--no-sgemm``) is eager with every Linear on the BLAS sgemm
(``get_runtime("eager", pointwise_conv=False)``), beside eager, which runs its large Linear
layers as 1x1 convolutions on CPU where a probe on this CPU timed them faster
(:mod:`fcasearch.runtime.eager`; eager's first line says which shapes, at what speed-up): its
line says what that choice gains or loses on the CPU the bench runs on.

Memory: a forward's temporary buffers come from the C allocator. With glibc's defaults, large
blocks are ``mmap``-ed and returned on free, so each call may page-fault them in afresh; how often
depends on glibc's adaptive threshold and thus on what ran before. ``--malloc keep`` makes glibc
keep freed memory for reuse (``mallopt``: no ``mmap`` blocks, no trimming), the steady state that
jemalloc, tcmalloc or ONNX Runtime's arena give; the reference-style forward, with its larger
temporaries, gains more from it than the folded form. Every line names the setting.

``--ops`` adds, per case, where eager, eager-sgemm and the reference-style forward spend their
time (the profiler's self CPU time per op kind, side by side): on a CPU met once, such as a GPU
machine's host, it says which ops make a ratio, not only the ratio.

Run: ``python bench/model_speed.py`` (about 10 minutes on 2 busy cores, most of it compiling and
exporting; ``--runtimes eager,onnxruntime`` skips the compile; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_forward import reference_forward

from fcasearch.cpuinfo import cpu_model, cpuinfo_field
from fcasearch.measure.prepare import build_for_spec
from fcasearch.models import calibrate_batchnorm, get_spec, to_reference_state_dict
from fcasearch.runtime import RuntimeUnavailable, UnsupportedModel, get_runtime, parse_runtimes

MODELS = {"L1": "fcaformer_l1", "L2": "fcaformer_l2"}
REFERENCE = "reference-style"
SGEMM = "eager-sgemm"  # eager with every Linear on the BLAS sgemm (pointwise_conv=False)


def prepare_case(
    spec, batch: int, runtimes: list[str], sgemm: bool = False
) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """The callables of one case (each runtime and the reference-style forward) and a note on
    each runtime (version and max abs diff vs eager, or why it is missing)."""
    model = calibrate_batchnorm(build_for_spec(spec), generator=torch.Generator().manual_seed(0))
    ref = reference_forward(spec, {k: v.clone() for k, v in to_reference_state_dict(model).items()})
    x = torch.randn(
        batch, spec.in_chans, *spec.img_size, generator=torch.Generator().manual_seed(1)
    )
    fns: dict[str, Callable[[], object]] = {}
    notes: dict[str, str] = {}
    for name in runtimes:
        rt = get_runtime(name)
        try:
            prepared = rt.prepare(copy.deepcopy(model), x)
        except (RuntimeUnavailable, UnsupportedModel) as exc:
            notes[name] = f"skipped: {exc}"
            continue
        fns[name] = prepared.run
        diff = (
            ""
            if prepared.max_abs_diff is None
            else f", max |diff| vs eager {prepared.max_abs_diff:.1e}"
        )
        notes[name] = f"{prepared.version}{diff}, prepared in {prepared.setup_seconds:.0f} s"
        if name == "eager" and "Linear layers" in prepared.note:  # which shapes the probe kept
            notes[name] += "; " + prepared.note[prepared.note.index("Linear layers") :]
    if sgemm:
        prepared = get_runtime("eager", pointwise_conv=False).prepare(copy.deepcopy(model), x)
        fns[SGEMM] = prepared.run
        notes[SGEMM] = f"{prepared.version} (pointwise_conv=False)"
    fns[REFERENCE] = lambda: ref(x)
    return fns, notes


def keep_freed_memory() -> str:
    """Make glibc malloc keep freed memory for reuse (no ``mmap`` for large blocks, no trimming of
    the heap), so that a forward's temporary buffers are not page-faulted in afresh on every call:
    the steady state jemalloc, tcmalloc or ONNX Runtime's arena give. Returns what was done."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # glibc's mallopt parameters (malloc.h)
        ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    except (OSError, AttributeError) as exc:
        raise SystemExit(f"--malloc keep: glibc's mallopt is not available here ({exc})") from None
    if not ok:
        raise SystemExit("--malloc keep: glibc's mallopt refused M_MMAP_MAX=0 or M_TRIM_THRESHOLD")
    return "malloc keep (glibc mallopt: M_MMAP_MAX 0, M_TRIM_THRESHOLD 2^31-1)"


def interleave(
    fns: dict[str, Callable[[], object]], rounds: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per form, the median wall time and the median process CPU time (s) of its calls in each
    of ``rounds`` rounds; a round calls every form once, back to back, ``repeats`` times, in a
    freshly shuffled order each time (after one warm-up call of each). Shuffled, not rotated: a
    rotation keeps the cyclic order, so each form would always follow the same other form and
    carry whatever that one leaves behind (ONNX Runtime's spinning threads doubled the time of
    the form after it, see :mod:`fcasearch.runtime.onnx`)."""
    names = list(fns)
    shuffle = random.Random(0)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for name in names:
            fns[name]()
        for _ in range(rounds):
            w: dict[str, list[float]] = {n: [] for n in names}
            c: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(repeats):
                order = names[:]
                shuffle.shuffle(order)
                for name in order:
                    w0, c0 = time.perf_counter(), time.process_time()
                    fns[name]()
                    w[name].append(time.perf_counter() - w0)
                    c[name].append(time.process_time() - c0)
            for name in names:
                wall[name].append(statistics.median(w[name]))
                cpu[name].append(statistics.median(c[name]))
    return wall, cpu


def op_breakdown(
    fns: dict[str, Callable[[], object]], forms: list[str], calls: int = 3, top: int = 10
) -> list[str]:
    """Where each form spends its time: torch.profiler's self CPU time per op kind, per call
    (``calls`` profiled calls after one unprofiled), for the ``top`` op kinds by the most any
    form spends in them; one line per op kind, the forms side by side. Times are inflated by the
    profiler (read them against each other, not against the timed medians)."""
    from torch.profiler import ProfilerActivity, profile

    per: dict[str, dict[str, float]] = {}
    for name in forms:
        with torch.inference_mode():
            fns[name]()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(calls):
                    fns[name]()
        per[name] = {e.key: e.self_cpu_time_total / 1e3 / calls for e in prof.key_averages()}
    kinds = sorted(
        {k for table in per.values() for k in table},
        key=lambda k: -max(table.get(k, 0.0) for table in per.values()),
    )
    width = max(len(k) for k in kinds[:top])
    lines = [f"{'op (self CPU ms per call)':<{width}}  " + "  ".join(f"{n:>15}" for n in forms)]
    lines.append(
        f"{'all ops':<{width}}  " + "  ".join(f"{sum(per[n].values()):>15.2f}" for n in forms)
    )
    for k in kinds[:top]:
        cells = "  ".join(f"{per[n][k]:>15.2f}" if k in per[n] else f"{'-':>15}" for n in forms)
        lines.append(f"{k:<{width}}  {cells}")
    return lines


def ratio_text(num: list[float], den: list[float]) -> str:
    """``median x (min-max)`` of per-round ratios ``num / den``."""
    rs = [a / b for a, b in zip(num, den)]
    return f"{statistics.median(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--runtimes", default="eager,compile,onnxruntime")
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median reported)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls of each form per round")
    ap.add_argument("--target", type=float, default=1.3)
    ap.add_argument(
        "--no-sgemm",
        action="store_true",
        help=f"leave out {SGEMM!r} (eager with every Linear on the BLAS sgemm, not as a 1x1 conv)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 rounds, 2 repeats, 64 px (unless --rounds, --repeats or --img say)",
    )
    ap.add_argument(
        "--ops",
        action="store_true",
        help="after each case's timing, print where eager, eager-sgemm and the reference-style "
        "forward spend their time (profiler self CPU time per op kind)",
    )
    ap.add_argument(
        "--malloc",
        choices=["default", "keep"],
        default="default",
        help="default: glibc as configured; keep: freed memory kept for reuse (no page faults)",
    )
    args = ap.parse_args(argv)
    try:
        parse_runtimes(args.runtimes)
    except ValueError as exc:
        ap.error(f"--runtimes: {exc}")
    malloc = "malloc glibc as configured"
    if args.malloc == "keep":
        malloc = keep_freed_memory()
    if args.quick:  # the smoke run's settings, where none was given
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for flag, value in (("--rounds", 2), ("--repeats", 2), ("--img", 64)):
            if flag not in given:
                setattr(args, flag[2:], value)
    runtimes = parse_runtimes(args.runtimes)
    if "eager" not in runtimes:
        runtimes.insert(0, "eager")  # the yardstick of the other runtimes
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = f"CPU {cpuinfo_field('vendor_id') or 'vendor unknown'} {cpu_model()}"

    lines = []
    for tag in args.models:
        spec = get_spec(MODELS[tag], img_size=args.img)
        for b in args.batches:
            fns, notes = prepare_case(spec, b, runtimes, sgemm=not args.no_sgemm)
            forms = list(notes)  # the runtimes in order (prepared or not), then eager-sgemm
            for name in forms:
                print(f"{tag} b{b}: {name}: {notes[name]}", flush=True)
            times, cpu_times = interleave(fns, args.rounds, args.repeats)
            if args.ops:
                which = [n for n in ("eager", SGEMM, REFERENCE) if n in fns]
                for line in op_breakdown(fns, which):
                    print(f"{tag} b{b} ops: {line}", flush=True)
            head = f"{tag} b{b} fp32 {args.img}px {args.threads} threads"
            ref_ms = statistics.median(times[REFERENCE]) * 1e3
            for name in forms:
                if name not in times:
                    lines.append(f"{head} | {name}: {notes[name]} | {cpu}")
                    continue
                ms = statistics.median(times[name]) * 1e3
                text = (
                    f"{head} | {name} {ms:.1f} ms | vs {REFERENCE} {ref_ms:.1f} ms: "
                    f"{ratio_text(times[REFERENCE], times[name])}, CPU-time "
                    f"{statistics.median(a / c for a, c in zip(cpu_times[REFERENCE], cpu_times[name])):.2f}x"
                )
                if name == "eager":
                    rs = [a / c for a, c in zip(times[REFERENCE], times[name])]
                    verdict = "meets" if statistics.median(rs) >= args.target else "MISSES"
                    text += f" ({verdict} target >= {args.target}x)"
                else:
                    cpu_vs_eager = statistics.median(
                        a / c for a, c in zip(cpu_times["eager"], cpu_times[name])
                    )
                    text += (
                        f" | vs eager: {ratio_text(times['eager'], times[name])}, CPU-time "
                        f"{cpu_vs_eager:.2f}x"
                    )
                version = notes[name].split(",")[0]
                lines.append(f"{text} | {args.rounds} rounds | {cpu} | {malloc} | {version}")
    print()
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
