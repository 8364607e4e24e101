"""Benchmark of cost measurement: time per candidate, and how repeatable latency rankings are.

Prints seconds per candidate for the closed form, fvcore, torch's FlopCounterMode and a latency
measurement (``measure_cost`` with its search defaults), then runs ``--sweeps`` sweeps of latency
over ten specs whose MACs span ~5M to ~420M (FcaFormer-L1 shapes scaled in width, 64-128 px) and
reports the median coefficient of variation of each spec's median latency across sweeps and
Kendall's tau between the rankings of sweep 1 and sweep 2 (and the mean over all sweep pairs).

Then, per runtime (``--runtimes``, default eager, onnxruntime, compile), what one search trial's
latency measurement costs (``measure_cost(spec, runtime=...)`` with the search's settings, latency
only: preparation included, i.e. export, session creation or compilation, and the check against
eager) for members of the ``micro`` space, against a 2-epoch micro trial (proxy training on the
bundled digits at 32 px with the search's defaults) of the same member, trained just before it is
measured; and how long of it the timed runs hold the device exclusively (``exclusive=``: in a
search, the device lock that pauses the trials training on the device). Each runtime is used once on another member
first: that first use also pays one-time start-up (imports, the exporter's first call), which a
search pays once per worker process, and is printed apart. Target (issue 19): under 10% for ``eager``
and ``onnxruntime``.

Usage: ``python bench/measure_cost.py [--threads 1] [--sweeps 5] [--device cpu]``
(``--only-runtimes`` runs just the per-runtime part). Absolute times on shared machines vary by
30% or more; compare the numbers of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import time

import numpy as np
import torch
from scipy.stats import kendalltau

from fcasearch.cpuinfo import cpu_model
from fcasearch.measure import (
    count_flops_fvcore,
    count_macs,
    count_macs_torch,
    count_params,
    measure_cost,
)
from fcasearch.models import build_model
from fcasearch.runtime import parse_runtimes
from fcasearch.spec import ArchSpec

# (width factor of L1, image side): MACs roughly 1.6x apart from one to the next
GRID = [
    (0.25, 64), (0.375, 64), (0.25, 96), (0.25, 128), (0.375, 128),
    (0.5, 96), (1.0, 64), (0.875, 96), (0.875, 128), (1.0, 128),
]  # fmt: skip


def bench_specs() -> list[ArchSpec]:
    specs = []
    for f, img in GRID:
        w = [max(16, int(64 * f) // 16 * 16), max(32, int(128 * f) // 32 * 32)]
        w += [max(32, int(192 * f) // 32 * 32), max(32, int(320 * f) // 32 * 32)]
        specs.append(
            ArchSpec.hybrid(
                (2, 2, 6, 2), w, [w[2] // 32, w[3] // 32], img_size=img, num_classes=100
            )
        )
    return specs


def per_spec(seconds: float, n: int) -> float:
    return seconds / n


def runtime_costs(runtimes: list[str], n_specs: int, threads: int, device: str) -> None:
    """Seconds of one trial's latency measurement per runtime vs a 2-epoch micro trial.

    Each spec is trained, then measured on every runtime, before the next spec: every ratio
    compares a measurement with the training next to it in time, so a slow minute of a shared
    machine moves both sides of it.
    """
    from fcasearch.data import get_dataset
    from fcasearch.runtime import RuntimeUnavailable, get_runtime
    from fcasearch.space import load_space
    from fcasearch.train import TrainConfig, train_model

    space = load_space("micro")
    rng = np.random.default_rng(0)
    specs = [space.sample_feasible(rng) for _ in range(n_specs)]
    data = get_dataset("digits", img_size=32)
    torch.set_num_threads(threads)
    latency_only = {"device": device, "threads": threads, "memory": False, "energy": False}
    usable, first = [], {}
    measure_cost(specs[0], **latency_only)  # start-up
    warm = space.sample_feasible(np.random.default_rng(1))  # not one of the timed specs
    for name in runtimes:
        try:
            get_runtime(name).check(device)
        except RuntimeUnavailable as exc:
            print(f"  {name}: not measured: {exc}")
            continue
        # the first measurement in a process also pays one-time start-up (imports, the
        # exporter's or compiler's first use); a search pays it once, so it is printed apart
        t = time.perf_counter()
        measure_cost(warm, runtime=name, **latency_only)
        first[name] = time.perf_counter() - t
        usable.append(name)
    held: list[float] = []

    @contextlib.contextmanager
    def exclusive():  # what a search's device lock holds: trainers on the device wait this long
        t = time.perf_counter()
        try:
            yield
        finally:
            held.append(time.perf_counter() - t)

    train_s: list[float] = []
    costs: dict[str, list[float]] = {name: [] for name in usable}
    waits: dict[str, list[float]] = {name: [] for name in usable}
    status: dict[str, set[str]] = {name: set() for name in usable}
    setups: dict[str, list[dict[str, float]]] = {name: [] for name in usable}
    config = TrainConfig(lr=2e-3, batch_size=64, seed=0)  # the search's defaults
    for s in specs:
        t = time.perf_counter()
        train_model(build_model(s), data, "epochs=2", config, device=device, progress=False)
        train_s.append(time.perf_counter() - t)
        for name in usable:
            t = time.perf_counter()
            res = measure_cost(s, runtime=name, exclusive=exclusive, **latency_only)
            costs[name].append(time.perf_counter() - t)
            waits[name].append(held.pop())
            status[name].add(res.status)
            setups[name].append(res.setup)
    trial = statistics.median(train_s)
    print(f"2-epoch micro trial (digits, 32 px, {threads} thread(s)): median {trial:.2f} s over "
          f"{n_specs} specs ({min(train_s):.2f}-{max(train_s):.2f}); CPU {cpu_model()}")  # fmt: skip
    for name in usable:
        ratios = [c / tr for c, tr in zip(costs[name], train_s)]
        target = " (target < 10%)" if name in ("eager", "onnxruntime") else ""
        print(
            f"  {name}: {statistics.median(costs[name]):.2f} s per trial's latency measurement "
            f"({min(costs[name]):.2f}-{max(costs[name]):.2f}; status "
            f"{'/'.join(sorted(status[name]))}) = {statistics.median(ratios):.1%} of the 2-epoch "
            f"trial trained just before it (median over specs, {min(ratios):.1%}-"
            f"{max(ratios):.1%}){target}; first use in the process {first[name]:.2f} s, once per "
            f"worker; of it, the timed runs held the device exclusively (trainers on it paused) "
            f"{statistics.median(waits[name]) * 1e3:.0f} ms"
        )
        steps = [k for k in setups[name][0] if all(k in d for d in setups[name])]
        if len(steps) > 1:  # where the preparation's time went (medians over the specs)
            parts = [
                f"{k} {statistics.median(d[k] for d in setups[name]) * 1e3:.1f} ms" for k in steps
            ]
            print(f"    {name} preparing the model: {parts[0]}" + (f" ({', '.join(parts[1:])})" if parts[1:] else ""))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--sweeps",
        type=int,
        default=5,
        help="latency sweeps over the specs, at least 2 (default 5)",
    )
    parser.add_argument("--runtimes", default="eager,onnxruntime,compile")
    parser.add_argument("--runtime-specs", type=int, default=3, help="micro specs per runtime")
    parser.add_argument("--only-runtimes", action="store_true", help="just the per-runtime part")
    args = parser.parse_args()
    if args.sweeps < 2:  # the CV across sweeps and the tau between two need two
        parser.error(f"--sweeps {args.sweeps}: at least 2")
    try:
        runtimes = parse_runtimes(args.runtimes)
    except ValueError as exc:
        parser.error(f"--runtimes: {exc}")
    if args.only_runtimes:
        runtime_costs(runtimes, args.runtime_specs, args.threads, args.device)
        return
    specs = bench_specs()
    n = len(specs)
    print(f"{n} specs, MACs {min(map(count_macs, specs)) / 1e6:.1f}M to {max(map(count_macs, specs)) / 1e6:.1f}M; "
          f"device {args.device}, threads {args.threads}; load average {os.getloadavg()[0]:.2f}")  # fmt: skip

    reps = 200
    t = time.perf_counter()
    for _ in range(reps):
        for s in specs:
            count_params(s), count_macs(s)
    closed = per_spec(time.perf_counter() - t, reps * n)
    print(f"closed form: {closed * 1e3:.3f} ms/spec (params + MACs; target < 1 ms)")

    t = time.perf_counter()
    for s in specs:
        model = build_model(s).eval()
        report = count_flops_fvcore(model, torch.randn(1, s.in_chans, *s.img_size))
        assert report.core_macs == count_macs(s)
    print(
        f"fvcore: {per_spec(time.perf_counter() - t, n):.3f} s/spec (build + trace at batch 1; equals the closed form)"
    )

    t = time.perf_counter()
    for s in specs:
        with torch.device("meta"):
            model = build_model(s).eval()
        assert count_macs_torch(
            model, torch.empty(1, s.in_chans, *s.img_size, device="meta")
        ) == count_macs(s)
    print(
        f"FlopCounterMode on meta: {per_spec(time.perf_counter() - t, n):.3f} s/spec (build + count)"
    )

    measure_cost(specs[0], device=args.device, threads=args.threads)  # one-time start-up costs
    t = time.perf_counter()
    for s in specs:
        measure_cost(s, device=args.device, threads=args.threads, memory=False, energy=False)
    lat_only = per_spec(time.perf_counter() - t, n)
    t = time.perf_counter()
    for s in specs:
        measure_cost(s, device=args.device, threads=args.threads)
    full = per_spec(time.perf_counter() - t, n)
    print(f"latency measurement: {lat_only:.3f} s/spec (measure_cost defaults, latency only); "
          f"{full:.3f} s/spec with inference + training-step memory")  # fmt: skip

    sweeps: list[list[float]] = []
    for k in range(args.sweeps):
        res = [
            measure_cost(s, device=args.device, threads=args.threads, memory=False, energy=False)
            for s in specs
        ]
        sweeps.append([r.metrics["latency_ms"] for r in res])
        print(f"  sweep {k + 1}: " + " ".join(f"{v:7.2f}" for v in sweeps[-1]) + " ms")
    cvs = []
    for i in range(n):
        values = [sw[i] for sw in sweeps]
        cvs.append(statistics.stdev(values) / statistics.fmean(values))
    tau12 = kendalltau(sweeps[0], sweeps[1]).statistic
    taus = [kendalltau(a, b).statistic for a, b in itertools.combinations(sweeps, 2)]
    print(
        f"latency repeatability over {args.sweeps} sweeps x {n} specs: median CV of medians "
        f"{statistics.median(cvs):.1%} (max {max(cvs):.1%}), Kendall tau sweep1 vs sweep2 {tau12:.2f} "
        f"(target >= 0.9); mean tau over all {len(taus)} sweep pairs {statistics.fmean(taus):.2f}, "
        f"min {min(taus):.2f}"
    )
    macs_tau = kendalltau([count_macs(s) for s in specs], sweeps[0]).statistic
    print(
        f"Kendall tau MACs vs sweep-1 latency: {macs_tau:.2f}; load average {os.getloadavg()[0]:.2f}"
    )
    runtime_costs(runtimes, args.runtime_specs, args.threads, args.device)


if __name__ == "__main__":
    main()
