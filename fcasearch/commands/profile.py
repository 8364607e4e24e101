"""``fcasearch profile``: params, MACs, latency, memory and energy of models on this hardware.

Example::

    fcasearch profile fcaformer_l1 convnext_tiny best.json --device cuda \\
        --batch-sizes 1,64 --dtypes fp32,bf16 --runtime eager,onnxruntime --out profile.csv

One row per (model, batch size, dtype, runtime) goes to the CSV (and the JSON beside it), with the
runtime's version and the hardware fingerprint; the runtimes of one cell are measured side by
side. The terminal shows a table (an unstable latency is marked ``~``) and a progress bar.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

# timed runs every latency cell makes before its stopping rule is consulted (--max-repeats is a
# cap above it); passed to the measurement, so the check and the measurement cannot disagree
MIN_REPEATS = 5


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 1,64") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 1,64")
    return sorted(set(values))


def _dtype_list(text: str) -> list[str]:
    from fcasearch.measure.prepare import DTYPES

    allowed = tuple(DTYPES)
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise argparse.ArgumentTypeError(
            f"{text!r}: dtypes are {', '.join(allowed)} (comma-separated)"
        )
    return list(dict.fromkeys(values))


def _runtime_list(text: str) -> list[str]:
    from fcasearch.runtime import parse_runtimes

    try:
        return parse_runtimes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fcasearch profile``."""
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="registry names (fcaformer_l1 ...), baselines (convnext_tiny, swin_t, deit_s_like), "
        "spec JSON (files or the text itself) or RUN_DIR:ARCH_ID (a trial of a search run), as "
        "fcasearch export takes them",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument(
        "--batch-sizes", type=_int_list, default=[1], metavar="B[,B...]", help="default 1"
    )
    parser.add_argument(
        "--dtypes",
        type=_dtype_list,
        default=["fp32"],
        metavar="D[,D...]",
        help="fp32, bf16, fp16 (default fp32)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's)"
    )
    parser.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="input side of registry and reference models (default 224); a spec JSON or run "
        "trial fixes its own, and another is refused; a report draws a profiled reference only "
        "at its runs' input size",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=None,
        help="classifier outputs of registry and reference models (default 1000); a spec JSON or "
        "run trial fixes its own, and another is refused",
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="channels-last weights and inputs"
    )
    parser.add_argument(
        "--runtime",
        type=_runtime_list,
        default=["eager"],
        metavar="R[,R...]",
        help="runtimes to measure latency on, side by side: eager (default), compile "
        "(torch.compile; needs a C++ compiler on CPU), onnxruntime (torch.onnx export, checked "
        "against eager), tensorrt (CUDA, torch-tensorrt)",
    )
    parser.add_argument(
        "--runtime-option",
        action="append",
        default=[],
        metavar="RUNTIME.KEY=VALUE",
        help="an option of one runtime (repeatable): eager.pointwise_conv=false (every Linear on "
        "the BLAS sgemm), onnxruntime.exporter=dynamo|torchscript|auto, onnxruntime.opset=18, "
        "onnxruntime.providers=TensorrtExecutionProvider,CUDAExecutionProvider (in order of "
        "preference); recorded in each row's runtime_options",
    )
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="time a CUDA graph replay of the forward (no per-kernel launch cost; CUDA only)",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip inference/training peak memory"
    )
    parser.add_argument("--no-energy", action="store_true", help="skip energy (NVML)")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed runs before timing, >= 0 (default 5)"
    )
    parser.add_argument(
        "--max-repeats",
        type=int,
        default=100,
        help=f"cap on timed runs, at least {MIN_REPEATS}: every cell times {MIN_REPEATS} runs "
        "before it may stop (default 100)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=10.0,
        help="cap on timing per cell, s, > 0 (default 10)",
    )
    parser.add_argument(
        "--target-cv",
        type=float,
        default=0.01,
        help="stop timing when the median's relative s.e. is below this, >= 0 (0: always time to "
        "a cap; default 0.01)",
    )
    parser.add_argument(
        "--cv-threshold",
        type=float,
        default=0.1,
        help="robust per-run spread (1.4826 MAD / median) above which a latency cell is measured "
        "again and, if it stays above, marked unstable; > 0 (default 0.1)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="re-measurements of an unstable cell, with backoff, >= 0 (default 2)",
    )
    parser.add_argument(
        "--energy-seconds",
        type=float,
        default=2.0,
        help="energy window per cell, s, > 0 (default 2)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.csv",
        help="write CSV here and JSON beside it",
    )


def _check_numbers(args: argparse.Namespace) -> None:
    """ValueError (one line: the option, its value and what to give) for a count, duration or
    threshold no cell could be measured with, before anything is measured or written (each
    cell would otherwise fail alike, or measure without limit)."""
    counts = [
        ("--warmup", args.warmup, 0, ""),
        ("--retries", args.retries, 0, ""),
        ("--max-repeats", args.max_repeats, MIN_REPEATS,
         f" (every cell times {MIN_REPEATS} runs before it may stop)"),
        ("--threads", args.threads, 1, ""),
        ("--img-size", args.img_size, 1, ""),
        ("--classes", args.classes, 1, ""),
    ]  # fmt: skip
    for flag, value, least, why in counts:
        if value is not None and value < least:
            raise ValueError(
                f"{flag} {value}: must be a whole number >= {least}{why}; give {flag} {least} "
                "or more"
            )
    positive = [
        ("--max-seconds", args.max_seconds, "seconds, e.g. 10"),
        ("--energy-seconds", args.energy_seconds, "seconds, e.g. 2"),
        ("--cv-threshold", args.cv_threshold, "e.g. 0.1"),
    ]
    for flag, value, example in positive:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} {value:g}: must be a positive number ({example})")
    if not (math.isfinite(args.target_cv) and args.target_cv >= 0):
        raise ValueError(
            f"--target-cv {args.target_cv:g}: must be a number >= 0, e.g. 0.01 (0: always time "
            "to --max-repeats or --max-seconds)"
        )


def _fmt(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value) / scale:,.{digits}f}"


def _percent(value: Any) -> str:
    text = _fmt(value, 0.01, 1)
    return text if text == "-" else f"{text}%"


def _table(rows: list[dict[str, Any]], fp: dict[str, Any]) -> Any:
    from rich.table import Table

    where = fp.get("gpu_name") or fp.get("cpu_model")
    fid = rows[0]["fingerprint_id"] if rows else ""
    table = Table(
        title=f"{where}, {fp.get('threads')} CPU threads, torch {fp.get('torch')} [{fid}]"
    )
    heads = [
        ("model", "left"), ("batch", "right"), ("dtype", "left"), ("runtime", "left"), ("params M", "right"),
        ("MMACs", "right"), ("latency ms", "right"), ("p90 ms", "right"), ("robust CV", "right"),
        ("img/s", "right"), ("peak MiB", "right"), ("train MiB", "right"), ("mJ/img", "right"), ("W", "right"),
        ("status", "left"),
    ]  # fmt: skip
    for name, justify in heads:
        table.add_column(name, justify=justify, no_wrap=name in ("model", "status"))
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"[red]{r['status']}[/red]"
        latency = _fmt(r["latency_ms"])
        if r.get("latency_stable") is False:
            latency, status = f"~{latency}", f"{status} [yellow]unstable[/yellow]"
        table.add_row(
            str(r["model"]), str(r["batch_size"]), str(r["dtype"]), str(r.get("runtime", "")),
            _fmt(r["params"], 1e6), _fmt(r["macs"], 1e6, 1), latency,
            _fmt(r["latency_p90_ms"]), _percent(r["latency_cv"]),
            _fmt(r["throughput_ips"], 1, 1), _fmt(r["peak_mem_mb"], 1, 1), _fmt(r["train_mem_mb"], 1, 1),
            _fmt(r["energy_mj_per_image"], 1, 2), _fmt(r.get("avg_power_w"), 1, 0), status,
        )  # fmt: skip
    return table


def run(args: argparse.Namespace) -> int:
    """Profile the grid; 2 on a user error, 1 if any cell failed, else 0."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fcasearch.measure.prepare import check_device
    from fcasearch.measure.profile import profile_grid, resolve_target, write_profile
    from fcasearch.runtime import RuntimeUnavailable, get_runtime, parse_runtime_options

    console = Console()
    if not console.is_terminal:  # a pipe or file: do not squeeze the table into 80 columns
        console = Console(width=200)
    try:
        _check_numbers(args)
        check_device(args.device)
        targets = [
            resolve_target(m, img_size=args.img_size, num_classes=args.classes) for m in args.models
        ]
        if args.out is not None and args.out.suffix.lower() != ".csv":
            raise ValueError(f"--out {args.out}: must name a .csv file (the JSON goes next to it)")
        runtime_options = parse_runtime_options(args.runtime_option)
        for name in runtime_options:
            if name not in args.runtime:
                raise ValueError(
                    f"--runtime-option {name}.*: {name} is not among the runtimes measured "
                    f"(--runtime {','.join(args.runtime)})"
                )
        for name in args.runtime:
            get_runtime(name, **runtime_options.get(name, {})).check(args.device)
    except (ValueError, RuntimeUnavailable) as exc:
        print(f"fcasearch profile: error: {exc}", file=sys.stderr)
        return 2
    total = len(targets) * len(args.batch_sizes) * len(args.dtypes) * len(args.runtime)
    progress = Progress(
        TextColumn("[bold]profile[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task(
            f"{targets[0].label} b{args.batch_sizes[0]} {args.dtypes[0]}", total=total
        )

        def on_row(row: dict[str, Any]) -> None:
            progress.update(
                task,
                advance=1,
                description=f"{row['model']} b{row['batch_size']} {row['dtype']} "
                f"{row['runtime']}: {row['status']}",
            )

        try:
            rows = profile_grid(
                targets,
                device=args.device,
                batch_sizes=args.batch_sizes,
                dtypes=args.dtypes,
                runtimes=args.runtime,
                runtime_options=runtime_options,
                threads=args.threads,
                on_row=on_row,
                channels_last=args.channels_last,
                cuda_graph=args.cuda_graph,
                memory=not args.no_memory,
                energy=not args.no_energy,
                warmup=args.warmup,
                min_repeats=MIN_REPEATS,
                max_repeats=args.max_repeats,
                max_seconds=args.max_seconds,
                target_cv=args.target_cv,
                cv_threshold=args.cv_threshold,
                retries=args.retries,
                energy_seconds=args.energy_seconds,
            )
        except (ValueError, RuntimeUnavailable) as exc:
            progress.stop()
            print(f"fcasearch profile: error: {exc}", file=sys.stderr)
            return 2
    fp = json.loads(rows[0]["fingerprint"]) if rows else {}
    console.print(_table(rows, fp))
    for r in rows:
        if r["status"] != "ok":
            console.print(
                f"{r['model']} b{r['batch_size']} {r['dtype']} {r['runtime']}: {r['status']}: "
                f"{r['reason']}"
            )
    unstable = [r for r in rows if r.get("latency_stable") is False]
    if unstable:
        console.print(
            f"{len(unstable)} latency cell(s) marked ~ stayed above the CV threshold "
            f"{args.cv_threshold:g} after {args.retries} re-measurement(s): not exact values "
            "(the machine is busy; measure again when it is quiet)"
        )
    versions = sorted(
        {
            f"{r['runtime']}: {r['runtime_version']}"
            + (f" ({r['runtime_options']})" if r.get("runtime_options") else "")
            for r in rows
        }
    )
    console.print("runtimes: " + "; ".join(versions))
    # why a column shows "-" (each row's notes say it; the table says it once)
    missing = {
        n
        for r in rows
        for n in str(r.get("notes", "")).split(" | ")
        if n.startswith(("energy: unavailable", "peak_mem: not measured"))
    }
    for note in sorted(missing):
        console.print(note, markup=False)
    if args.out is not None:
        csv_path, json_path = write_profile(rows, args.out)
        console.print(f"wrote {csv_path} and {json_path}")
    return 1 if any(r["status"] == "failed" for r in rows) else 0
