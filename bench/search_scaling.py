"""Search scaling on Ray: dry-run trials (a fixed sleep) at 1, 2, 4 and 8 concurrent trials.

Every configuration is a real ``python -m fcasearch search`` process (sampler, SQLite study,
trial log, Tune searcher and scheduler, one Ray actor per trial slot) whose trials sleep
``--seconds`` instead of training (``--budget dry=S``), on the micro space with random sampling:

* ``ray local``: the Ray the search starts for itself on this machine;
* ``ray cluster``: a 2-worker cluster on loopback (a head without CPUs and two ``ray start``
  worker nodes of ``max(widths)/2`` CPUs each), joined with ``--address``;
* ``local``: the in-process executor, one trial at a time (the reference for overhead).

Each width runs ``--waves`` x width trials. Throughput is measured in steady state (each
dry-run row records its sleep's wall-clock window): from the moment every slot has started a
trial to the last trial's start, the share of slot-time spent inside trials, which is the ratio
of trials per minute to the ideal (width x 60 / S; target >= 0.9 at every width). The one-time
start (Ray, the driver, each slot's first worker process) is left out and printed apart.
The per-trial framework overhead is the time a slot spends between one trial and the next
(searcher, Optuna storage, trial log, Tune, the reused actor's reset): Ray at width 1 against
the local executor (target: Ray adds < 0.5 s per trial).

Run: ``python bench/search_scaling.py`` (about 9 min on 2 cores); ``--widths 1 --waves 2
--seconds 0.5 --no-cluster`` for a quick look (the test runs that).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cluster_module():
    """tests/search/raycluster.py: the loopback cluster the tests use (it imports its neighbour
    ``ports``, which pytest puts on the path: so does this)."""
    folder = str(REPO / "tests" / "search")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(
        "raycluster", REPO / "tests" / "search" / "raycluster.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dry_search(
    out: Path,
    *,
    executor: str,
    width: int,
    n: int,
    seconds: float,
    env: dict[str, str],
    address: str | None = None,
) -> dict:
    """Run one dry-run search; its trial windows, wall time and counts."""
    args = [
        sys.executable, "-m", "fcasearch", "search", "--space", "micro", "--out", str(out),
        "--objectives", "accuracy", "macs", "--sampler", "random", "--budget", f"dry={seconds:g}",
        "--n-trials", str(n), "--executor", executor, "--max-concurrent", str(width),
        "--cpus-per-trial", "1", "--threads", "1", "--no-progress", "--no-report",
    ]  # fmt: skip
    if address:
        args += ["--address", address]
    t0 = time.time()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.time() - t0
    if proc.returncode:
        raise RuntimeError(f"search failed ({executor}, width {width}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines() if x.strip()]
    windows = []
    for row in rows:
        window = json.loads(row.get("notes") or "{}").get("dry_window")
        if window and row["status"] == "complete":
            windows.append(tuple(float(x) for x in window.split(",")))
    return {"windows": sorted(windows), "wall": wall, "rows": len(rows), "started": t0}


def summarize(res: dict, width: int, seconds: float) -> dict:
    """Steady-state throughput against the ideal, and the time a slot spends between trials.

    Steady state is the interval from the moment every slot has started a trial (the width-th
    trial start) to the last trial start (from then on slots drain for want of trials): in it,
    every slot should be asleep in a trial all the time. The share of slot-time spent in
    trials is the throughput's ratio to the ideal (width x 60 / S trials per minute)."""
    w = res["windows"]
    starts = sorted(t0 for t0, _ in w)
    lo, hi = starts[min(width, len(starts)) - 1], starts[-1]
    if hi <= lo:
        raise ValueError(f"{len(w)} trials at width {width}: too few for a steady state")
    busy = sum(max(0.0, min(t1, hi) - max(t0, lo)) for t0, t1 in w)
    ratio = busy / (width * (hi - lo))
    ideal = width * 60.0 / seconds
    return {
        "trials": len(w),
        "per_min": ratio * ideal,
        "ideal": ideal,
        "ratio": ratio,
        "gap": seconds * (1.0 / ratio - 1.0),  # s per trial outside trials, per slot
        "start": starts[0] - res["started"],
        "ramp": lo - starts[0],
    }


def _line(label: str, width: int, s: dict) -> str:
    return (
        f"{label:<11} width {width}: {s['trials']:>3} trials, {s['per_min']:6.1f} trials/min of "
        f"ideal {s['ideal']:6.1f} ({s['ratio']:.2f}; target >= 0.9); {s['gap']:.2f} s per trial "
        f"between trials; first trial after {s['start']:.1f} s, all slots busy {s['ramp']:.1f} s "
        "later"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--waves", type=int, default=4, help="trials per slot, at least 2 (default 4)")
    p.add_argument("--seconds", type=float, default=5.0, help="sleep per trial (default 5)")
    p.add_argument("--no-cluster", action="store_true", help="skip the 2-worker cluster")
    p.add_argument("--keep", type=Path, help="keep the runs in this folder")
    args = p.parse_args(argv)
    if args.waves < 2:  # a steady state needs every slot started before the last start
        p.error(f"--waves {args.waves}: at least 2 trials per slot are needed for a steady state")

    from fcasearch.cpuinfo import cpu_model

    root = Path(args.keep or tempfile.mkdtemp(prefix="fcs-scaling-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    load = os.getloadavg()[0]
    print(
        f"search scaling: dry-run trials of {args.seconds:g} s, {args.waves} per slot; "
        f"{cpu_model()}, {os.cpu_count()} CPUs, load {load:.1f} at start"
    )
    overhead: dict[str, float] = {}
    try:
        local = summarize(
            dry_search(root / "local", executor="local", width=1, n=args.waves,
                       seconds=args.seconds, env=env),
            1, args.seconds,
        )  # fmt: skip
        overhead["local"] = local["gap"]
        print(_line("local", 1, local))
        for width in args.widths:
            s = summarize(
                dry_search(root / f"ray-{width}", executor="ray", width=width,
                           n=args.waves * width, seconds=args.seconds, env=env),
                width, args.seconds,
            )  # fmt: skip
            if width == 1:
                overhead["ray"] = s["gap"]
            print(_line("ray local", width, s), flush=True)
        if not args.no_cluster:
            rc = _cluster_module()
            with rc.LoopbackCluster(root / "cluster") as cluster:
                per_worker = max(1, (max(args.widths) + 1) // 2)
                cluster.add_node("head", cpus=0)
                cluster.add_node("w1", cpus=per_worker)
                cluster.add_node("w2", cpus=per_worker)
                for width in args.widths:
                    res = dry_search(root / f"cluster-{width}", executor="ray", width=width,
                                     n=args.waves * width, seconds=args.seconds,
                                     env=cluster.env, address=cluster.address)  # fmt: skip
                    s = summarize(res, width, args.seconds)
                    if width == 1:
                        overhead["cluster"] = s["gap"]
                    print(_line("ray cluster", width, s), flush=True)
        if "ray" in overhead:
            added = overhead["ray"] - overhead["local"]
            print(
                f"per-trial overhead: local executor {overhead['local']:.2f} s, Ray (local, width "
                f"1) {overhead['ray']:.2f} s: Ray adds {added:.2f} s per trial (target < 0.5 s)"
                + (f"; on the cluster {overhead['cluster']:.2f} s" if "cluster" in overhead else "")
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
