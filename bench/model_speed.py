"""Eager inference form of FcaFormer L1/L2 against a reference-style forward, side by side.

fcasearch's deployable eager form (``fuse_for_inference``: Conv-BN and layer scales folded,
attention bias gathered once; eval; ``torch.inference_mode``; fixed threads) is timed against
:func:`reference_forward.reference_forward` (the official model's manner: NCHW, Conv-BN unfused,
queries for the cross tokens, bias gathered every call, explicit softmax) reading the same
weights. BN statistics are calibrated first (``calibrate_batchnorm``): an untrained FcaFormer's
late activations are denormal floats, which no trained model has.

The two are timed in interleaved rounds in one process: each round times every case as pairs of
calls back to back (which form goes first alternating), and its ratio is the reference's median
time over the eager form's, so machine noise that lasts longer than a pair largely cancels. Each printed line gives the median
latencies, the median ratio over rounds and their range, the same ratio of process CPU time (on a
host shared with other work it moves less than wall time; with several threads it includes the
time threads spend waiting for each other) and the CPU. Target (issue 19): ratio
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


def paired_times(
    eager: Callable[[], object], reference: Callable[[], object], pairs: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median wall times and median process CPU times (s) of ``eager`` and ``reference`` over
    ``pairs`` back-to-back pairs of calls (which of the two goes first alternating), after one
    warm-up call of each: ``((wall eager, wall reference), (cpu eager, cpu reference))``."""
    eager(), reference()
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for i in range(pairs):
        for k in (0, 1) if i % 2 else (1, 0):
            w0, c0 = time.perf_counter(), time.process_time()
            (eager, reference)[k]()
            wall[k].append(time.perf_counter() - w0)
            cpu[k].append(time.process_time() - c0)
    med = statistics.median
    return (med(wall[0]), med(wall[1])), (med(cpu[0]), med(cpu[1]))


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
    ap.add_argument("--repeats", type=int, default=5, help="timed pairs of calls per round")
    ap.add_argument("--target", type=float, default=1.3)
    ap.add_argument("--profile", action="store_true", help="print a profiler table per case")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 repeats, 64 px")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats, args.img = 1, 2, 64
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu_name = f"{cpu_model()} ({cpuinfo_field('vendor_id') or 'vendor unknown'})"

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

    walls: dict[tuple[str, int], list[tuple[float, float]]] = {(c[0], c[1]): [] for c in cases}
    cpus: dict[tuple[str, int], list[tuple[float, float]]] = {k: [] for k in walls}
    with torch.inference_mode():
        if args.profile:
            for tag, b, eager, _ in cases:
                print(f"\n{tag} b{b} eager folded form:\n{profile_table(eager)}")
        for _ in range(args.rounds):
            for tag, b, eager, reference in cases:
                wall, cpu = paired_times(eager, reference, args.repeats)
                walls[(tag, b)].append(wall)
                cpus[(tag, b)].append(cpu)

    print()
    med = statistics.median
    for (tag, b), rows in walls.items():
        ratios = [ref / ours for ours, ref in rows]
        cpu_ratio = med(ref / ours for ours, ref in cpus[(tag, b)])
        ratio = med(ratios)
        verdict = "meets" if ratio >= args.target else "MISSES"
        print(
            f"{tag} b{b} fp32 {args.img}px {args.threads} threads | eager folded "
            f"{med(r[0] for r in rows) * 1e3:.1f} ms | reference-style "
            f"{med(r[1] for r in rows) * 1e3:.1f} ms | ratio {ratio:.2f}x ({verdict} target >= "
            f"{args.target}x) | rounds {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} | "
            f"CPU-time ratio {cpu_ratio:.2f}x | CPU {cpu_name} | torch {torch.__version__}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
