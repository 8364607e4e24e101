"""Benchmark of the device lock: latency CV of a candidate measured while other trials train,
with the lock against without, side by side in one run.

``--trainers`` processes train micro candidates on the bundled digits without pause, the way
concurrent Ray trials do (``train_model`` with the device lock's shared sections as its guard).
Meanwhile this process measures one candidate's latency ``--cells`` times per mode, the modes
taking turns cell by cell so that both see the same machine:

* ``no lock``: ``measure_cost`` as a trial calls it, while the trainers run;
* ``with lock``: the same call inside the lock's exclusive section (what a search does): the
  trainers pause at their next step boundary until the cell is measured.

An ``idle`` row (the same cells before the trainers start) gives the floor. Each cell is one
attempt (no re-measurement), so the CV is the raw spread: the robust CV (1.4826 MAD / median) the
stability threshold (0.1) is checked on, and the plain CV. Every line names the CPU.

With ``--device cuda`` the trainers train on the GPU and the cells are timed there (CUDA events):
separate processes on one GPU take turns on it, so an unguarded measurement waits for whatever
the trainers have queued. ``--train-batch`` sets the trainers' batch (a larger one loads the GPU
more). Every line names the CPU, and the GPU where one is used.

Usage: ``python bench/measure_isolation.py [--trainers 2] [--cells 8] [--threads 1]
[--device cpu|cuda] [--train-batch 64]``.
Absolute times on shared machines vary; compare the rows of one run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fcasearch.cpuinfo import cpu_model
from fcasearch.measure import measure_cost
from fcasearch.search.devicelock import DeviceLock


def _candidate(seed: int):
    import optuna

    from fcasearch.space import load_space

    space = load_space("micro")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    return space.sample(trial)


def _trainer(lock_dir: str, stop: str, seed: int, threads: int, device: str, batch: int) -> None:
    """Train micro candidates on ``device`` until the ``stop`` file exists (a child process)."""
    torch.set_num_threads(threads)
    from fcasearch.data import get_dataset
    from fcasearch.models import build_model
    from fcasearch.train import TrainConfig, train_model

    lock = DeviceLock(_lock_key(device), lock_dir)
    data = get_dataset("digits", img_size=32)
    i = 0
    while not os.path.exists(stop):
        spec = _candidate(1000 + seed * 100 + i)
        train_model(
            build_model(spec),
            data,
            "steps=20",
            TrainConfig(batch_size=batch, seed=i),
            device=device,
            progress=False,
            guard=lock.shared,
        )
        i += 1


def _lock_key(device: str) -> str:
    return f"bench-{device.replace(':', '-')}"


def _cell(spec, threads: int, device: str) -> tuple[float, float, float]:
    cost = measure_cost(
        spec, device=device, threads=threads, memory=False, energy=False, retries=0,
        max_seconds=1.0,
    )  # fmt: skip
    s = cost.latency
    return s.robust_cv, s.cv, s.median_ms


def _line(name: str, cells: list[tuple[float, float, float]], cpu: str) -> str:
    rcv = sorted(c[0] for c in cells)
    cv = sorted(c[1] for c in cells)
    med = statistics.median(c[2] for c in cells)
    unstable = sum(1 for c in rcv if c > 0.1)
    return (
        f"{name:<22} robust CV median {statistics.median(rcv):.3f} max {rcv[-1]:.3f} | plain CV "
        f"median {statistics.median(cv):.3f} max {cv[-1]:.3f} | above 0.1: {unstable}/{len(rcv)} "
        f"| latency median {med:.2f} ms | {cpu}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainers", type=int, default=2, help="training processes (default 2)")
    ap.add_argument("--cells", type=int, default=8, help="latency cells per mode (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="threads of each process (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    ap.add_argument("--train-batch", type=int, default=64, help="trainers' batch (default 64)")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    cpu = f"{cpu_model()} ({os.cpu_count()} CPUs)"
    if args.device.startswith("cuda"):
        cpu += f", {torch.cuda.get_device_name(torch.device(args.device))}"
    spec = _candidate(0)
    print(
        f"measure_isolation: candidate {spec.short()}, eager, batch 1, {args.device}, "
        f"{args.threads} thread(s); {args.trainers} trainer process(es) of {args.threads} "
        f"thread(s), batch {args.train_batch}; {args.cells} cells per "
        f"mode, one attempt each; load average {os.getloadavg()[0]:.2f} at start"
    )
    idle = [_cell(spec, args.threads, args.device) for _ in range(args.cells)]
    with tempfile.TemporaryDirectory() as tmp:
        stop = str(Path(tmp) / "stop")
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(
                target=_trainer,
                args=(tmp, stop, k, args.threads, args.device, args.train_batch),
            )
            for k in range(args.trainers)
        ]
        for p in procs:
            p.start()
        time.sleep(8.0)  # the trainers import torch, load the data and start training
        lock = DeviceLock(_lock_key(args.device), tmp)
        free, locked = [], []
        try:
            for _ in range(args.cells):
                free.append(_cell(spec, args.threads, args.device))
                with lock.exclusive():
                    locked.append(_cell(spec, args.threads, args.device))
        finally:
            Path(stop).touch()
            for p in procs:
                p.join(timeout=120)
                if p.is_alive():
                    p.terminate()
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(_line("idle (no training)", idle, cpu))
    print(_line("training, no lock", free, cpu))
    print(_line("training, with lock", locked, cpu))


if __name__ == "__main__":
    main()
