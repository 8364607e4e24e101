"""Eager inference form of FcaFormer L1/L2 against a reference-style forward, side by side.

fcasearch's deployable eager form (``fuse_for_inference``: Conv-BN and layer scales folded,
attention bias gathered once; eval; ``torch.inference_mode``; fixed threads) is timed against
:func:`reference_forward.reference_forward` (the official model's manner: NCHW, Conv-BN unfused,
queries for the cross tokens, bias gathered every call, explicit softmax) reading the same
weights. BN statistics are calibrated first (``calibrate_batchnorm``): an untrained FcaFormer's
late activations are denormal floats, which no trained model has.

The two are timed in interleaved rounds in one process (each round times every case, the order of
the two forms alternating from round to round); a round's ratio is reference time / eager time,
so machine noise that lasts longer than a round cancels. Each printed line gives the median
latencies, the median ratio over rounds and their range, and the CPU. Target (issue 19): ratio
>= 1.3 at batch 1 and 8 for L1 and L2 at 224 px on 2 threads.

Run: ``python bench/model_speed.py`` (a few minutes on 2 busy cores; ``--quick`` for a smoke run;
``--profile`` adds a torch.profiler table of the eager form per case).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_forward import reference_forward

from fcasearch.cpuinfo import cpu_model, cpuinfo_field
from fcasearch.models import (
    build_model,
    calibrate_batchnorm,
    fuse_for_inference,
    get_spec,
    to_reference_state_dict,
)

MODELS = {"L1": "fcaformer_l1", "L2": "fcaformer_l2"}


def median_time(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median wall time (s) of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_table(fn: Callable[[], object], rows: int = 15) -> str:
    """torch.profiler's table of ``fn``'s CPU operators (3 calls after 2 warm-up calls)."""
    fn(), fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median reported)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per form per round")
    ap.add_argument("--target", type=float, default=1.3)
    ap.add_argument("--profile", action="store_true", help="print a profiler table per case")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 repeats, 64 px")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats, args.img = 1, 2, 64
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = f"{cpu_model()} ({cpuinfo_field('vendor_id') or 'vendor unknown'})"

    cases = []  # (name, batch, eager, reference)
    for tag in args.models:
        spec = get_spec(MODELS[tag], img_size=args.img)
        model = calibrate_batchnorm(build_model(spec), generator=torch.Generator().manual_seed(0))
        ref = reference_forward(
            spec, {k: v.clone() for k, v in to_reference_state_dict(model).items()}
        )
        fused = fuse_for_inference(copy.deepcopy(model))
        x1 = torch.randn(1, 3, args.img, args.img)
        with torch.inference_mode():
            diff = (fused(x1) - ref(x1)).abs().max().item()
        print(f"{tag}: {spec.short()} | eager folded vs reference-style max |diff| {diff:.2e}")
        for b in args.batches:
            x = torch.randn(b, 3, args.img, args.img)
            cases.append((tag, b, lambda m=fused, x=x: m(x), lambda r=ref, x=x: r(x)))

    ratios: dict[tuple[str, int], list[float]] = {(c[0], c[1]): [] for c in cases}
    times: dict[tuple[str, int], list[tuple[float, float]]] = {k: [] for k in ratios}
    with torch.inference_mode():
        if args.profile:
            for tag, b, eager, _ in cases:
                print(f"\n{tag} b{b} eager folded form:\n{profile_table(eager)}")
        for r in range(args.rounds):
            for tag, b, eager, reference in cases:
                if r % 2:
                    t_ref = median_time(reference, 2, args.repeats)
                    t_ours = median_time(eager, 2, args.repeats)
                else:
                    t_ours = median_time(eager, 2, args.repeats)
                    t_ref = median_time(reference, 2, args.repeats)
                ratios[(tag, b)].append(t_ref / t_ours)
                times[(tag, b)].append((t_ours, t_ref))

    print()
    for (tag, b), rs in ratios.items():
        ours = statistics.median(t[0] for t in times[(tag, b)]) * 1e3  # ms
        ref = statistics.median(t[1] for t in times[(tag, b)]) * 1e3  # ms
        ratio = statistics.median(rs)
        verdict = "meets" if ratio >= args.target else "MISSES"
        print(
            f"{tag} b{b} fp32 {args.img}px {args.threads} threads | eager folded {ours:.1f} ms | "
            f"reference-style {ref:.1f} ms | ratio {ratio:.2f}x ({verdict} target >= "
            f"{args.target}x) | rounds {min(rs):.2f}-{max(rs):.2f}x over {len(rs)} | CPU {cpu} | "
            f"torch {torch.__version__}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
