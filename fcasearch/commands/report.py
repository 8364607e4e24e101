"""``fcasearch report``: a Pareto report (HTML, Markdown, CSV) from one or more results dirs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _reference(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--ref {text!r}: give one number or one per objective, e.g. 1.1 or 1.1,1.2"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("--ref needs at least one number")
    return values


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
        "--ref",
        type=_reference,
        default=None,
        metavar="R[,R...]",
        help="hypervolume reference point in normalized units, one value or one "
        "per objective (default 1.1)",
    )
    parser.add_argument(
        "--allow-mixed-hardware",
        action="store_true",
        help="compare latency/memory/energy objectives measured on different "
        "hardware fingerprints (refused by default)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE.csv",
        help="a `fcasearch profile` CSV: reference models on cost axes (latency "
        "and memory only when measured on the runs' hardware)",
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
            reference=args.ref,
            allow_mixed_hardware=args.allow_mixed_hardware,
            profile=args.profile,
            device=args.device,
            figures=not args.no_figures,
            title=args.title,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"fcasearch report: error: {exc}", file=sys.stderr)
        return 2
    print(f"html:     {paths.html}")
    print(f"markdown: {paths.markdown}")
    print(f"pareto:   {paths.pareto_csv}")
    return 0
