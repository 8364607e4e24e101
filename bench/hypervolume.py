"""Hypervolume and report speed: fcasearch.pareto (moocore) against the hand-written code it replaced.

Prints, measured in this one run (shared machines are noisy: compare the ratios):

1. the hypervolume of N points in 4 objectives, all mutually non-dominated (on a sphere), and in
   3 objectives; target: 1,000 points in 4 objectives under 50 ms;
2. beside it, the hand-written O(n^2)-per-slice implementation this project used before
   (read from git history, on fewer points: it needs about a minute for 1,000 in 4 objectives);
3. a whole report (tables, figures, HTML) of a synthesized T-trial run with 3 objectives;
   target: 1,000 trials under 30 s.

Run ``python bench/hypervolume.py`` (``--tiny`` for a seconds-long smoke run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OLD_PATH = "fcasearch/report/hypervolume.py"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def front_on_sphere(n: int, d: int, seed: int = 0) -> np.ndarray:
    """``n`` mutually non-dominated points: the positive orthant of the unit sphere, minimized."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(size=(n, d)))
    return 1.0 - x / np.linalg.norm(x, axis=1, keepdims=True)


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Fastest wall time of ``repeats`` calls, seconds, and the last result."""
    best, out = math.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def old_hypervolume() -> Callable[..., float] | None:
    """The hand-written implementation, from the git commit before it was removed."""
    try:
        rev = subprocess.run(
            ["git", "log", "--diff-filter=D", "--format=%H", "-1", "--", OLD_PATH],
            cwd=REPO, capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()  # fmt: skip
        if not rev:
            return None
        code = subprocess.run(
            ["git", "show", f"{rev}^:{OLD_PATH}"],
            cwd=REPO, capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    namespace: dict[str, Any] = {"__name__": "old_hypervolume"}
    exec(compile(code, OLD_PATH, "exec"), namespace)
    return namespace["hypervolume"]


def bench_hypervolume(
    sizes: list[tuple[int, int]], old_sizes: dict[int, int], repeats: int
) -> None:
    from fcasearch.pareto import hypervolume

    old = old_hypervolume()
    for n, d in sizes:
        pts = front_on_sphere(n, d)
        ref = np.full(d, 1.1)
        t_new, v_new = best_of(lambda p=pts, r=ref: hypervolume(p, r), repeats)
        line = (
            f"hypervolume {n} points x {d} objectives (all on the front): {t_new * 1e3:.2f} ms "
            f"(value {v_new:.6g})"
        )
        if d == 4 and n >= 1000:
            line += f"  [target < 50 ms: {'met' if t_new < 0.05 else 'MISSED'}]"
        print(line)
        m = min(n, old_sizes.get(d, n))
        if old is not None and m:
            small = pts[:m]
            t_old, v_old = best_of(lambda p=small, r=ref: old(p, r), 1)
            t_same, v_same = best_of(lambda p=small, r=ref: hypervolume(p, r), repeats)
            print(
                f"  side by side on {m} of them: hand-written {t_old * 1e3:.1f} ms, moocore "
                f"{t_same * 1e3:.3f} ms, ratio {t_old / max(t_same, 1e-9):,.0f}x, values "
                f"{v_old:.12g} vs {v_same:.12g} (|diff| {abs(v_old - v_same):.1e})"
            )
        elif old is None:
            print("  (the hand-written implementation is not in this checkout's git history)")


def synthesize_run(root: Path, n: int, seed: int = 0) -> Path:
    """A results directory with ``n`` trials of accuracy / MACs / latency, written as a search
    writes it: run.yaml with its hypervolume definition, trials.jsonl and the exports."""
    import yaml

    from fcasearch.measure.counting import count_macs, count_params
    from fcasearch.space import load_space
    from fcasearch.space.bounds import space_hypervolume
    from fcasearch.storage.records import RunDir, TrialLog

    rng = np.random.default_rng(seed)
    space = load_space("micro")
    objectives = [("accuracy", "maximize"), ("macs", "minimize"), ("latency_ms", "minimize")]
    hv = space_hypervolume(space, objectives, {"latency_ms": "20"})
    run = RunDir(root / f"synth-{n}")
    run.root.mkdir(parents=True)
    config = {
        "name": run.name,
        "objectives": [{"name": a, "direction": b} for a, b in objectives],
        "sampler": "nsga2",
        "seed": seed,
        "device": "cpu",
        "fingerprint": {"cpu_model": _cpu()},
        "fingerprint_id": "0123456789ab",
        "hypervolume": hv.to_dict(),
        "space": space.to_dict(),
    }
    run.run_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    log = TrialLog(run)
    t0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
    for trial in range(n):
        spec = space.sample_uniform(rng)
        macs, params = count_macs(spec), count_params(spec)
        status = "complete" if rng.random() > 0.1 else "infeasible"
        acc = 0.3 + 0.6 * (1 - math.exp(-macs / 3e5)) + rng.normal(0, 0.03)
        log.append(
            {
                "trial": trial,
                "run": run.name,
                "status": status,
                "reason": "" if status == "complete" else "constraint: params > max_params",
                "arch_id": spec.arch_id,
                "spec": spec.to_json(),
                "spec_short": spec.short(),
                "accuracy": float(np.clip(acc, 0, 1)) if status == "complete" else math.nan,
                "params": params,
                "macs": macs,
                "latency_ms": macs / 4e5 + rng.uniform(0.3, 0.8)
                if status == "complete"
                else math.nan,
                "latency_stable": bool(rng.random() > 0.02),
                "epochs": 2.0,
                "budget": "epochs=2",
                "started_at": (t0 + timedelta(seconds=30 * trial)).isoformat(),
                "finished_at": (t0 + timedelta(seconds=30 * trial + 25)).isoformat(),
                "device": "cpu",
                "fingerprint_id": "0123456789ab",
            }
        )
    log.export(objectives)
    return run.root


def bench_report(n_trials: int) -> None:
    from fcasearch.report import build_report

    root = Path(tempfile.mkdtemp(prefix="fcasearch-bench-hv-"))
    try:
        t = time.perf_counter()
        run = synthesize_run(root, n_trials)
        t_synth = time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        paths = build_report(run, root / "report")
        t_report, cpu = time.perf_counter() - t, time.process_time() - cpu
        summary = json.loads(paths.summary_json.read_text())
        line = (
            f"report of a {n_trials}-trial 3-objective run (tables, {len(paths.figures)} figures, "
            f"HTML): {t_report:.1f} s wall, {cpu:.1f} s CPU in this process; front {len(summary['pareto_arch_ids'])}, hypervolume "
            f"{summary['combined_hypervolume']:.4f} (synthesizing the run took {t_synth:.1f} s)"
        )
        if n_trials >= 1000:
            line += f"  [target < 30 s: {'met' if t_report < 30 else 'MISSED'}]"
        print(line)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="small sizes: a smoke run in seconds")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (best kept)")
    args = p.parse_args(argv)
    import moocore

    print(
        f"# {_cpu()}, {os.cpu_count()} CPUs (shared host: compare ratios); python "
        f"{platform.python_version()}, moocore {moocore.__version__}"
    )
    if args.tiny:
        bench_hypervolume([(50, 4), (50, 3)], {4: 20, 3: 20}, 2)
        bench_report(40)
    else:
        bench_hypervolume([(1000, 4), (1000, 3)], {4: 150, 3: 1000}, args.repeats)
        bench_report(1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
