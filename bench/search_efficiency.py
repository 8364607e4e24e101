"""Search efficiency: hypervolume of NSGA-II and TPE vs random search, and per-trial overhead.

Part 1 runs the real search (``run_search``, SQLite study, trial log) on the micro space with a
cheap objective: a zero-cost proxy (``--cheap proxy``, the default) or a short training
(``--cheap train``) maximized, and closed-form MACs minimized; no latency. For each sampler and
seed it records the hypervolume of the first k trials (objectives
normalized over every point any run found, maximized ones flipped, reference 1.1), averages over
seeds, and prints how many trials NSGA-II and TPE need to reach random search's final hypervolume.
Target: <= 50% of the trials. The samplers are the ones ``search.py`` builds for that many trials
(``make_sampler``: NSGA-II population ~1.25*sqrt(n) with children that are new architectures,
multivariate TPE after 10 random trials); every trial asks every space parameter (flat), see
``search_spaces/README.md``. Defaults: 400 trials x 20 seeds (with 5 seeds the reach moved by 20
points or more between seed sets, with 10 seeds by up to 9),
runs in parallel processes (``--jobs``), one thread each, so the numbers do not depend on the
job count. The same runs cut at 1/4 and 1/2 of the trials are printed for context.

Part 2 runs a short-training search and splits its wall time into the trials' own work (model
build, measurement, training) and everything the framework adds (sampling, storage, logging,
exports), after a 1-trial search has paid the process's one-time start-up (printed apart).
Target: overhead < 5%.

Run: ``python bench/search_efficiency.py`` (about 16 min with 2 jobs on 2 cores, of which the
overhead part is 1 min; ``--trials 100 --seeds 5`` for a shorter look)
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fcasearch.metrics import Objective
from fcasearch.report.analysis import fit_normalization, hv_history, rank_trials
from fcasearch.search.options import SearchOptions
from fcasearch.search.runner import run_search
from fcasearch.search.study import nsga2_population

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "micro.yaml"


def hv_curves(frames: dict[tuple[str, int], pd.DataFrame], objectives: list[Objective]) -> dict:
    """(sampler, seed) -> hypervolume after each trial, with the report's normalization fitted
    over every run at once (so all curves share one scale)."""
    runs = [df.assign(run_label=f"{s}-{k}", sampler=s) for (s, k), df in frames.items()]
    trials = pd.concat(runs, ignore_index=True)
    ranked = rank_trials(trials, objectives)
    hist = hv_history(trials, ranked, fit_normalization(ranked, objectives))
    hist = hist[hist["axis"] == "trial"].sort_values("x", kind="stable")
    return {
        key: hist.loc[hist["run_label"] == f"{key[0]}-{key[1]}", "hypervolume"].to_numpy()
        for key in frames
    }


SAMPLERS = ("random", "nsga2", "tpe")


def one_run(opts: SearchOptions) -> str:
    """One search (in a worker process with ``--jobs``); the path of its trials.parquet."""
    return str(run_search(opts).run.trials_parquet)


def reach(curve: np.ndarray, target: float) -> int | None:
    """1-based trial at which ``curve`` first reaches ``target``, or None."""
    hit = np.nonzero(curve >= target - 1e-12)[0]
    return int(hit[0]) + 1 if len(hit) else None


def part1(args, root: Path) -> None:
    quality = "accuracy" if args.cheap == "train" else f"proxy.{args.proxy}"
    objectives = f"{quality}:max macs:min"
    runs = {
        (sampler, seed): SearchOptions(
            space=str(SPACE),
            objectives=objectives,
            sampler=sampler,
            n_trials=args.trials,
            seed=seed,
            measure=False,
            progress=False,
            out=str(root / f"{sampler}-{seed}"),
            budget=args.short_budget,
            threads=1,  # the same numbers whatever --jobs is
        )
        for sampler in SAMPLERS
        for seed in range(args.seeds)
    }
    t0 = time.perf_counter()
    if args.jobs > 1:  # whole runs in parallel processes
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            paths = dict(zip(runs, pool.map(one_run, runs.values())))
    else:
        paths = {key: one_run(opts) for key, opts in runs.items()}
    frames = {key: pd.read_parquet(path) for key, path in paths.items()}
    wall = time.perf_counter() - t0
    curves = hv_curves(frames, [Objective(quality, "maximize"), Objective("macs", "minimize")])
    mean = {s: np.mean([curves[(s, k)] for k in range(args.seeds)], axis=0) for s in SAMPLERS}
    n = args.trials
    print(
        f"micro space, objective {objectives}, {n} trials x {args.seeds} seeds per sampler "
        f"({wall:.0f} s in all, {args.jobs} job(s)); samplers as `search.py` makes them for "
        f"{n} trials (NSGA-II population {nsga2_population(n)}, children new architectures)"
    )
    for s in SAMPLERS:
        finals = [curves[(s, k)][-1] for k in range(args.seeds)]
        print(
            f"  {s:6s} final hypervolume {np.mean(finals):.4f} +- {np.std(finals):.4f}  "
            f"(at 25%: {mean[s][n // 4 - 1]:.4f}, at 50%: {mean[s][n // 2 - 1]:.4f})"
        )
    target = mean["random"][-1]
    for s in ("nsga2", "tpe"):
        k = reach(mean[s], target)
        if k is not None:
            print(
                f"  {s} reaches random's final hypervolume {target:.4f} at trial {k}/{n} "
                f"= {k / n:.0%} of the trials (target <= 50%)"
            )
        else:
            print(
                f"  {s} does not reach random's final hypervolume {target:.4f} within {n} trials "
                f"(its final mean is {mean[s][-1]:.4f}; target <= 50% of the trials)"
            )
    # The same runs cut shorter: how the advantage grows with the budget (context only; the
    # samplers were configured for the full count).
    cuts = [c for c in (n // 4, n // 2) if c >= 20]
    for c in cuts:
        parts = []
        for s in ("nsga2", "tpe"):
            k = reach(mean[s][:c], mean["random"][c - 1])
            parts.append(f"{s} {k / c:.0%}" if k is not None else f"{s} not within {c}")
        print(f"  context, the first {c} trials of the same runs: random's HV reached at " + ", ".join(parts))  # fmt: skip


def part2(args, root: Path) -> None:
    opts = SearchOptions(
        space=str(SPACE), objectives="accuracy:max macs:min latency_ms:min", n_trials=args.overhead_trials,
        budget=args.overhead_budget, seed=0, progress=False, out=str(root / "overhead"),
    )  # fmt: skip
    # One-time process start-up (first imports of the search stack, dataset load, first model and
    # latency run) is paid once per process, not per trial: a 1-trial search takes it first, and
    # it is printed on its own line.
    t0 = time.perf_counter()
    run_search(dataclasses.replace(opts, n_trials=1, out=str(root / "warm-up")))
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    outcome = run_search(opts)
    wall = time.perf_counter() - t0
    df = pd.read_parquet(outcome.run.trials_parquet)
    work = df["trial_seconds"].sum()
    train, measure = df["train_seconds"].sum(), df["measure_seconds"].sum()
    n = len(df)
    print(
        f"overhead: {n} trials with training budget {args.overhead_budget} and latency measurement: wall {wall:.1f} s"
    )
    print(
        f"  trials' own work {work:.1f} s (training {train:.1f} s, measurement {measure:.1f} s, "
        f"build/data/other {work - train - measure:.1f} s)"
    )
    print(
        f"  framework overhead (sampling, storage, logging, exports): {(wall - work) / n * 1e3:.0f} ms/trial "
        f"= {(wall - work) / wall:.1%} of the wall time (target < 5%)"
    )
    print(f"  (a 1-trial search run first in this process, start-up included: {startup:.1f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--trials", type=int, default=400)
    p.add_argument(
        "--cheap",
        choices=["proxy", "train"],
        default="proxy",
        help="the cheap accuracy stand-in: a zero-cost proxy, or a short training",
    )
    p.add_argument("--proxy", default="naswot", help="zero-cost proxy (with --cheap proxy)")
    p.add_argument("--short-budget", default="steps=10", help="training budget (--cheap train)")
    p.add_argument("--overhead-trials", type=int, default=6)
    p.add_argument("--overhead-budget", default="epochs=2", help="the quickstart's budget")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--skip-hypervolume", action="store_true")
    p.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="runs in parallel processes (each run uses 1 thread; results do not depend on it)",
    )
    p.add_argument("--keep", metavar="DIR", help="keep the run directories under DIR")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="fcs-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        if not args.skip_hypervolume:
            part1(args, root)
        if not args.skip_overhead:
            part2(args, root)


if __name__ == "__main__":
    main()
