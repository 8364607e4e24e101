"""Search efficiency: hypervolume of NSGA-II and TPE vs random search, and per-trial overhead.

Part 1 runs the real search (``run_search``, SQLite study, trial log) on the micro space with a
cheap objective: a zero-cost proxy (``--cheap proxy``, the default) or a short training
(``--cheap train``) maximized, and closed-form MACs minimized; no latency. For each sampler and
seed it records the hypervolume of the first k trials (objectives
normalized over every point any run found, maximized ones flipped, reference 1.1), averages over
seeds, and prints how many trials NSGA-II and TPE need to reach random search's final hypervolume.
Target: <= 50% of the trials. The samplers are the ones ``search.py`` builds for that many trials
(``make_sampler``: NSGA-II population ~1.25*sqrt(n) with children that are new architectures,
multivariate TPE after 10 random trials); every trial asks only the parameters its
architecture uses, see ``search_spaces/README.md``. ``--samplers`` and ``--seed-start`` pick a
subset (random is the reference and must be among them). Defaults: 400 trials x 20 seeds (with 5 seeds the reach moved by 20
points or more between seed sets, with 10 seeds by up to 9),
runs in parallel processes (``--jobs``), one thread each, so the numbers do not depend on the
job count. The same runs cut at 1/4 and 1/2 of the trials are printed for context.

Part 2 runs a short-training search and splits its wall time into the trials' own work (model
build, measurement, training) and everything the framework adds (sampling, storage, logging,
exports), after a 1-trial search has paid the process's one-time start-up (printed apart).
Target: overhead < 5%.

Part 3 (anytime performance) compares multi-fidelity MO-ASHA with NSGA-II + FIFO at **equal
wall-clock time**, not equal trial counts: each configuration searches the micro space for
``--anytime-seconds`` (``--time-budget``), accuracy from real training on the bundled digits at
``--anytime-budget`` (``epochs=8``: rungs at epochs 1 and 3 with the default ``eta=3``) maximized,
closed-form MACs minimized, ``--anytime-seeds`` seeds. The hypervolume after t seconds counts the
trials complete by then (a pruned trial's accuracy is at a lower fidelity and is left out), under
the runs' fixed definition (``run.yaml`` ``hypervolume``: accuracy in [0, 1], MACs up to the
space's closed-form maximum; the same for every run). Configurations: ``nsga2+fifo`` (the
baseline), ``random+mo-asha`` (MO-ASHA as Schmucker et al. run it, random proposals) and
``nsga2+mo-asha``. Target: MO-ASHA reaches NSGA-II+FIFO's final mean hypervolume in at most 50%
of the wall time. The curves go to ``--out`` (``anytime.csv``: per run and the means on a common
time grid; ``anytime.png``: mean and 25-75% band across seeds).

Run: ``python bench/search_efficiency.py`` (part 1 about 16 min with 2 jobs on 2 cores, part 2
1 min, part 3 3 configurations x 5 seeds x 600 s / jobs, 75 min with 2 jobs); ``--quick`` for a
short look at every part (about 10 min with 2 jobs).
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
        for sampler in args.samplers
        for seed in range(args.seed_start, args.seed_start + args.seeds)
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
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    mean = {s: np.mean([curves[(s, k)] for k in seeds], axis=0) for s in args.samplers}
    n = args.trials
    print(
        f"micro space, objective {objectives}, {n} trials x {args.seeds} seeds per sampler "
        f"({wall:.0f} s in all, {args.jobs} job(s)); samplers as `search.py` makes them for "
        f"{n} trials (NSGA-II population {nsga2_population(n)}, children new architectures)"
    )
    for s in args.samplers:
        finals = [curves[(s, k)][-1] for k in seeds]
        print(
            f"  {s:6s} final hypervolume {np.mean(finals):.4f} +- {np.std(finals):.4f}  "
            f"(at 25%: {mean[s][n // 4 - 1]:.4f}, at 50%: {mean[s][n // 2 - 1]:.4f})"
        )
    target = mean["random"][-1]
    for s in [s for s in args.samplers if s != "random"]:
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
        for s in [s for s in args.samplers if s != "random"]:
            k = reach(mean[s][:c], mean["random"][c - 1])
            parts.append(f"{s} {k / c:.0%}" if k is not None else f"{s} not within {c}")
        print(f"  context, the first {c} trials of the same runs: random's HV reached at " + ", ".join(parts))  # fmt: skip


def part2(args, root: Path) -> None:
    opts = SearchOptions(
        space=str(SPACE), objectives="accuracy:max macs:min latency_ms:min", n_trials=args.overhead_trials,
        budget=args.overhead_budget, seed=0, progress=False, out=str(root / "overhead"),
        references=(), final_rounds=0,
    )  # fmt: skip
    # the reference models (measured before the first trial) and the final re-measurement (after
    # the last) are work of the run, not of its trials: left out, or they would read as
    # per-trial framework overhead (6 trials: 40% of the wall time with them, 8.5% without)
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
        f"overhead: {n} trials with training budget {args.overhead_budget} and latency measurement "
        f"(no reference models, no final rounds): wall {wall:.1f} s"
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


ANYTIME = (("nsga2", "fifo"), ("random", "mo-asha"), ("nsga2", "mo-asha"))
BASELINE = "nsga2+fifo"


def anytime_curve(run_dir: Path, grid: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Hypervolume of one run's complete trials against seconds since its first trial started
    (sampled on ``grid``), under the run's own fixed definition; and its trial counts."""
    import yaml

    from fcasearch.pareto import HypervolumeDefinition

    doc = yaml.safe_load((run_dir / "run.yaml").read_text())
    definition = HypervolumeDefinition.from_dict(doc["hypervolume"], source=str(run_dir))
    df = pd.read_parquet(run_dir / "trials.parquet")
    start = pd.to_datetime(df["started_at"]).min()
    end = pd.to_datetime(df["started_at"]) + pd.to_timedelta(df["trial_seconds"], unit="s")
    df = df.assign(t=(end - start).dt.total_seconds())
    done = df[df["status"] == "complete"].sort_values("t", kind="stable")
    counts = df["status"].value_counts().to_dict()
    if done.empty:
        return np.zeros(len(grid)), counts
    values = done[list(definition.names)].to_numpy(dtype=float)
    history = definition.history(values)
    idx = np.searchsorted(done["t"].to_numpy(), grid, side="right")
    return np.where(idx > 0, history[np.maximum(idx - 1, 0)], 0.0), counts


def part3(args, root: Path) -> None:
    seconds, seeds = args.anytime_seconds, args.anytime_seeds
    runs = {}
    for seed in range(seeds):  # seed-major: concurrent jobs run different configurations
        for sampler, scheduler in ANYTIME:
            label = f"{sampler}+{scheduler}"
            runs[(label, seed)] = SearchOptions(
                space=str(SPACE), objectives="accuracy:max macs:min", sampler=sampler,
                scheduler=scheduler, min_epochs=args.min_epochs,
                reduction_factor=args.reduction_factor, n_trials=None, time_budget=seconds,
                budget=args.anytime_budget, seed=seed, measure=False, progress=False,
                threads=1, out=str(root / f"anytime-{label}-{seed}"),
            )  # fmt: skip
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=ctx) as pool:
        paths = dict(zip(runs, pool.map(one_run, runs.values())))
    wall = time.perf_counter() - t0
    grid = np.linspace(0.0, seconds, 241)
    curves, counts = {}, {}
    for key, path in paths.items():
        curves[key], counts[key] = anytime_curve(Path(path).parent, grid)
    labels = [f"{a}+{b}" for a, b in ANYTIME]
    stack = {c: np.array([curves[(c, k)] for k in range(seeds)]) for c in labels}
    mean = {c: stack[c].mean(axis=0) for c in labels}
    print(
        f"anytime: micro space, accuracy (training {args.anytime_budget} on digits) vs MACs, "
        f"{seconds:g} s per run x {seeds} seeds per configuration ({wall:.0f} s in all, "
        f"{args.jobs} job(s), 1 thread per run); MO-ASHA {_rungs(args)}"
    )
    for c in labels:
        finals = stack[c][:, -1]
        done = np.mean([counts[(c, k)].get("complete", 0) for k in range(seeds)])
        pruned = np.mean([counts[(c, k)].get("pruned", 0) for k in range(seeds)])
        print(
            f"  {c:15s} final hypervolume {finals.mean():.4f} +- {finals.std():.4f}  "
            f"(at 25%: {mean[c][60]:.4f}, at 50%: {mean[c][120]:.4f}); trials per run: "
            f"{done:.1f} complete, {pruned:.1f} pruned"
        )
    target = mean[BASELINE][-1]
    for c in labels:
        if c == BASELINE:
            continue
        hit = np.nonzero(mean[c] >= target - 1e-12)[0]
        if len(hit):
            t = grid[hit[0]]
            print(
                f"  {c} reaches {BASELINE}'s final hypervolume {target:.4f} at {t:.0f} s = "
                f"{t / seconds:.0%} of the wall time (target <= 50%)"
            )
        else:
            print(
                f"  {c} does not reach {BASELINE}'s final hypervolume {target:.4f} within "
                f"{seconds:g} s (its final mean is {mean[c][-1]:.4f}; target <= 50% of the time)"
            )
    save_anytime(Path(args.out), grid, labels, stack, mean)


def _rungs(args) -> str:
    from fcasearch.search.schedulers import RungSchedule
    from fcasearch.train import Budget

    epochs = Budget.parse(args.anytime_budget).epochs
    return RungSchedule(epochs, args.min_epochs, args.reduction_factor).describe()


def save_anytime(out: Path, grid, labels, stack, mean) -> None:
    """``anytime.csv`` (every run and the means on the grid) and ``anytime.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in labels:
        for k, curve in enumerate(stack[c]):
            rows += [{"config": c, "seed": k, "seconds": t, "hypervolume": v} for t, v in zip(grid, curve)]  # fmt: skip
        rows += [{"config": c, "seed": "mean", "seconds": t, "hypervolume": v} for t, v in zip(grid, mean[c])]  # fmt: skip
    pd.DataFrame(rows).to_csv(out / "anytime.csv", index=False)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in labels:
        lo, hi = np.percentile(stack[c], [25, 75], axis=0)
        ax.plot(grid, mean[c], label=c)
        ax.fill_between(grid, lo, hi, alpha=0.2)
    ax.axhline(mean[BASELINE][-1], color="grey", lw=0.8, ls="--")
    ax.axvline(grid[-1] / 2, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="wall-clock seconds", ylabel="hypervolume (run.yaml definition)")
    ax.set_title("Anytime hypervolume: mean and 25-75% across seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "anytime.png", dpi=120)
    plt.close(fig)
    print(f"  curves: {out / 'anytime.csv'}, {out / 'anytime.png'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--trials", type=int, default=400)
    p.add_argument("--seed-start", type=int, default=0, help="part 1: first seed")
    p.add_argument(
        "--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS, help="part 1's samplers"
    )
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
    p.add_argument("--skip-anytime", action="store_true")
    p.add_argument("--anytime-seconds", type=float, default=600.0, help="wall time per run (s)")
    p.add_argument("--anytime-seeds", type=int, default=5)
    p.add_argument("--anytime-budget", default="epochs=8", help="training budget per trial")
    p.add_argument("--min-epochs", type=int, default=1, help="MO-ASHA's first rung (epochs)")
    p.add_argument("--reduction-factor", type=int, default=3, help="MO-ASHA's eta")
    p.add_argument(
        "--out",
        default="results/bench-out",
        help="folder for anytime.csv and anytime.png (default results/bench-out, which git ignores)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short look at every part: 100 trials x 4 seeds, 3 overhead trials, "
        "anytime 90 s x 2 seeds at epochs=4",
    )
    args = p.parse_args()
    if "random" not in args.samplers:
        p.error("--samplers: random is the reference the others are compared with; include it")
    if args.trials < 8:
        p.error(f"--trials {args.trials}: at least 8 (the table reads the curves at 25% and 50%)")
    if args.quick:
        args.trials, args.seeds, args.overhead_trials = 100, 4, 3
        args.anytime_seconds, args.anytime_seeds, args.anytime_budget = 90.0, 2, "epochs=4"
    with tempfile.TemporaryDirectory(prefix="fcs-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        if not args.skip_hypervolume:
            part1(args, root)
        if not args.skip_overhead:
            part2(args, root)
        if not args.skip_anytime:
            part3(args, root)


if __name__ == "__main__":
    main()
