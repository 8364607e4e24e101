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

``--probe`` measures eager's Linear probe instead (:func:`fcasearch.runtime.eager.probe_linears`,
FcaFormer-L1 at batch 1, 224 px, on at least 2 threads, the probe's minimum): each cell probes the
shapes again, ``no lock`` beside the trainers and ``with lock`` inside the exclusive section (what
a search's eager runtime does); each line gives how often a shape's verdict (convolution or
sgemm) differs from the idle cells' majority and the spread of each shape's speed-up across cells.

Usage: ``python bench/measure_isolation.py [--trainers 2] [--cells 8] [--threads 1]
[--device cpu|cuda] [--train-batch 64] [--probe]``.
Absolute times on shared machines vary; compare the rows of one run.
"""

from __future__ import annotations

import argparse
import contextlib
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
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" per cell
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


class _Probe:
    """Cells of eager's Linear probe on FcaFormer-L1 (module docstring, ``--probe``)."""

    def __init__(self) -> None:
        from fcasearch.models import build_model, calibrate_batchnorm, get_spec
        from fcasearch.runtime import inference_form
        from fcasearch.runtime.eager import convert_linears

        model = inference_form(calibrate_batchnorm(build_model(get_spec("fcaformer_l1"))))[0]
        convert_linears(model)
        self.model = model
        self.x = torch.randn(1, 3, 224, 224)

    def cell(self, exclusive=None) -> dict[tuple[int, int, int], float]:
        """Shape -> the convolution's speed-up over the sgemm, in one probe."""
        from fcasearch.runtime.eager import probe_linears

        probes = probe_linears(self.model, self.x, exclusive=exclusive or contextlib.nullcontext)
        return {(p.rows, p.in_features, p.out_features): p.speedup for p in probes}


def _probe_line(name: str, cells: list[dict], idle: list[dict], cpu: str) -> str:
    from fcasearch.runtime.eager import PROBE_MARGIN

    shapes = sorted(idle[0])
    majority = {k: sum(c[k] >= PROBE_MARGIN for c in idle) * 2 > len(idle) for k in shapes}
    flips = sum((c[k] >= PROBE_MARGIN) != majority[k] for c in cells for k in shapes)
    spreads = []
    for k in shapes:
        ups = [c[k] for c in cells]
        spreads.append((max(ups) - min(ups)) / statistics.median(ups))
    lows = [min(c.values()) for c in cells]
    return (
        f"{name:<22} verdicts unlike idle's: {flips}/{len(cells) * len(shapes)} | speed-up "
        f"spread across cells (max-min)/median, median over {len(shapes)} shapes "
        f"{statistics.median(spreads):.2f}, max {max(spreads):.2f} | lowest speed-up per cell "
        f"{min(lows):.2f}-{max(lows):.2f}x | {cpu}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--trainers", type=int, default=2, help="training processes (default 2)")
    ap.add_argument("--cells", type=int, default=8, help="latency cells per mode (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="threads of each process (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    ap.add_argument("--train-batch", type=int, default=64, help="trainers' batch (default 64)")
    ap.add_argument("--probe", action="store_true", help="time eager's Linear probe instead")
    args = ap.parse_args()
    if args.probe and args.device != "cpu":
        raise SystemExit("--probe: the Linear probe runs on a CPU only; drop --device")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = f"{usable} CPUs" if usable == os.cpu_count() else f"{usable} of {os.cpu_count()} CPUs"
    cpu = f"{cpu_model()} ({cpus})"  # e.g. under taskset: the CPUs this run may use
    if args.device.startswith("cuda"):
        cpu += f", {torch.cuda.get_device_name(torch.device(args.device))}"
    spec = _candidate(0)
    if args.probe:
        torch.set_num_threads(max(2, args.threads))
        cell = _Probe().cell
        what = f"eager's Linear probe of FcaFormer-L1, batch 1, {torch.get_num_threads()} threads"
    else:

        def cell(exclusive=None):
            with exclusive() if exclusive else contextlib.nullcontext():
                return _cell(spec, args.threads, args.device)

        what = f"candidate {spec.short()}, eager, batch 1, {args.device}, {args.threads} thread(s)"
    print(
        f"measure_isolation: {what}; {args.trainers} trainer process(es) of {args.threads} "
        f"thread(s), batch {args.train_batch}; {args.cells} cells per "
        f"mode, one attempt each; load average {os.getloadavg()[0]:.2f} at start"
    )
    idle = [cell() for _ in range(args.cells)]
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
                free.append(cell())
                locked.append(cell(lock.exclusive))
        finally:
            Path(stop).touch()
            for p in procs:
                p.join(timeout=120)
                if p.is_alive():
                    p.terminate()
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.probe:
        for name, cells in [("idle (no training)", idle), ("training, no lock", free),
                            ("training, with lock", locked)]:  # fmt: skip
            print(_probe_line(name, cells, idle, cpu))
        return
    print(_line("idle (no training)", idle, cpu))
    print(_line("training, no lock", free, cpu))
    print(_line("training, with lock", locked, cpu))


if __name__ == "__main__":
    main()
