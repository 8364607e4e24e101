"""``fcasearch report``: a Pareto report (HTML, Markdown, CSV) from one or more results dirs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fcasearch report``."""
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="results directories (results/<run>) sharing their objectives",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="report directory (default: <first run>/report)",
    )
    parser.add_argument(
        "--hv-reference",
        nargs="+",
        default=None,
        metavar="NAME=REF[:BEST]",
        help="hypervolume reference of an objective in its own units, e.g. latency_ms=50; "
        "the runs are then compared with these references (default: each run's own definition "
        "from run.yaml, or the widest box of them when they differ)",
    )
    parser.add_argument(
        "--allow-mixed-hardware",
        action="store_true",
        help="compare latency/memory/energy objectives measured on different "
        "hardware fingerprints (refused by default)",
    )
    parser.add_argument(
        "--allow-mixed-runtimes",
        action="store_true",
        help="compare latency objectives measured on different runtimes (eager, onnxruntime, "
        "...; refused by default)",
    )
    parser.add_argument(
        "--allow-mixed-data",
        action="store_true",
        help="compare accuracy of runs trained on different data (dataset, subset of classes "
        "or images; refused by default)",
    )
    parser.add_argument(
        "--allow-mixed-budgets",
        action="store_true",
        help="compare accuracy of runs trained with different budgets (--budget epochs=1 vs "
        "steps=5; refused by default)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE.csv",
        help="a `fcasearch profile` CSV (or the JSON written beside it): reference models on "
        "cost axes (latency and memory only when measured on the runs' hardware)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="device named in the profile commands of the Pareto table (default: the run's device)",
    )
    parser.add_argument("--no-figures", action="store_true", help="write tables only")
    parser.add_argument("--title", default=None, help="page title")


def run(args: argparse.Namespace) -> int:
    """Build the report and print the paths written; 2 on a user error."""
    from fcasearch.report import build_report  # pandas and friends load here

    try:
        paths = build_report(
            args.runs,
            args.out,
            hv_reference=args.hv_reference,
            allow_mixed_hardware=args.allow_mixed_hardware,
            allow_mixed_runtimes=args.allow_mixed_runtimes,
            allow_mixed_data=args.allow_mixed_data,
            allow_mixed_budgets=args.allow_mixed_budgets,
            profile=args.profile,
            device=args.device,
            figures=not args.no_figures,
            title=args.title,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"fcasearch report: error: {exc}", file=sys.stderr)
        return 2
    for warning in paths.warnings:
        print(f"fcasearch report: warning: {warning}", file=sys.stderr)
    print(f"html:     {paths.html}")
    print(f"markdown: {paths.markdown}")
    print(f"pareto:   {paths.pareto_csv}")
    return 0
