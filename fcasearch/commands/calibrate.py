"""``fcasearch calibrate``: rank correlations of short training and zero-cost proxies with long training.

Example (the CPU quickstart's space and data)::

    fcasearch calibrate --space micro --n 12 --short epochs=1 --long epochs=4 --out results/calib

writes ``calibration.csv`` (one row per architecture), ``correlations.csv`` (Spearman and
Kendall of the long-budget accuracy with each predictor, with p-values) and ``calibration.png``,
and prints the correlation table, with a note naming the correlations that are not
significant (Spearman p > 0.05; at 3 or 4 architectures none can be). ``--n`` below 3, a short
budget that does not stop before the long one (same units), and a CUDA device torch does not
see are refused (exit 2) before anything runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ALPHA = 0.05  # significance level of the note under the correlation table


def _budget(text: str):
    from fcasearch.train.budget import Budget, BudgetError

    try:
        return Budget.parse(text)
    except BudgetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fcasearch calibrate``."""
    parser.add_argument(
        "--space",
        required=True,
        metavar="SPACE",
        help="search space: a YAML file or a shipped name (micro, ...)",
    )
    parser.add_argument(
        "--n",
        type=int,  # n < 3 is refused by calibrate(), in one line
        default=12,
        metavar="N",
        help="architectures to sample, at least 3 (default 12)",
    )
    parser.add_argument(
        "--short",
        type=_budget,
        default="epochs=1",
        metavar="BUDGET",
        help="short budget, e.g. epochs=1, steps=50, seconds=20 (default epochs=1)",
    )
    parser.add_argument(
        "--long",
        type=_budget,
        default="epochs=4",
        metavar="BUDGET",
        help="long budget: the accuracy being predicted; must be longer than --short when both "
        "are in the same unit (default epochs=4)",
    )
    parser.add_argument(
        "--data",
        default="digits",
        help="dataset: digits (bundled, default), cifar10, cifar100, imagefolder",
    )
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="local root of cifar10/cifar100/imagefolder",
    )
    parser.add_argument(
        "--download", action="store_true", help="let torchvision download CIFAR into --data-root"
    )
    parser.add_argument(
        "--subset-classes",
        type=_positive_int,
        default=None,
        metavar="K",
        help="keep the first K classes",
    )
    parser.add_argument(
        "--subset-fraction",
        type=float,
        default=None,
        metavar="F",
        help="keep this fraction of each training class",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default results/calibrate-<space>)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of sampling, init, proxy batch and training (default 0)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=64, help="training batch size (default 64)"
    )
    parser.add_argument(
        "--lr", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3)"
    )
    parser.add_argument(
        "--proxies",
        default="synflow,naswot,grad_norm,snip",
        help="comma-separated zero-cost proxies (default all)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: torch's choice)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip calibration.png")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar or per-architecture lines"
    )


def significance_note(correlations: pd.DataFrame, alpha: float = ALPHA) -> str | None:
    """One plain line on which correlations are not significant, or ``None`` if all are.

    Args:
        correlations: :func:`~fcasearch.train.calibrate.rank_correlations`'s table.
        alpha: the significance level.
    """
    from math import factorial

    n = int(correlations["n"].max()) if len(correlations) else 0
    if n < 3:
        return "note: fewer than 3 architectures have both accuracies: no correlation computed"
    if 2 / factorial(n) > alpha:  # the smallest two-sided Spearman p at n points: 2/n!
        return (
            f"note: with {n} architectures no rank correlation can be significant (the smallest "
            f"Spearman p at n={n} is 2/{n}! = {2 / factorial(n):.3g} > {alpha}); use --n 5 or more"
        )
    weak = correlations.loc[~(correlations["spearman_p"] <= alpha), "predictor"]
    if weak.empty:
        return None
    return (
        f"note: not significant at n={n} (Spearman p > {alpha} or undefined), may be chance: "
        + ", ".join(weak)
    )


def run(args: argparse.Namespace) -> int:
    """Run the calibration and print the correlation table; 0 on success, 2 on bad input."""
    import pandas as pd
    import torch

    from fcasearch.data import DataError
    from fcasearch.space import SpaceError, load_space
    from fcasearch.spec import SpecError
    from fcasearch.train import ProxyError, TrainConfig, TrainError
    from fcasearch.train.calibrate import CalibrationError, calibrate

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        space = load_space(args.space)
        config = TrainConfig(lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    except (SpaceError, TrainError) as exc:
        print(f"fcasearch calibrate: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("results") / f"calibrate-{Path(str(args.space)).stem}"
    proxies = tuple(p.strip() for p in args.proxies.split(",") if p.strip())

    def log(i: int, row: dict) -> None:
        if not args.quiet:
            print(
                f"[{i + 1}/{args.n}] {row['arch_id']} {row['spec_short']}: params {row['params']:,} "
                f"acc {args.short}={row['acc_short']:.3f} {args.long}={row['acc_long']:.3f}",
                flush=True,
            )

    data_kwargs = {
        "root": args.data_root,
        "download": args.download,
        "subset_classes": args.subset_classes,
        "subset_fraction": args.subset_fraction,
        "seed": args.seed,
    }
    try:
        result = calibrate(
            space, args.n, args.short, args.long, data=args.data, seed=args.seed, device=args.device,
            out_dir=out, config=config, proxies=proxies, data_kwargs=data_kwargs,
            progress=not args.quiet, on_arch=log,
        )  # fmt: skip
    except (CalibrationError, DataError, ProxyError, SpaceError, SpecError, TrainError) as exc:
        print(f"fcasearch calibrate: {exc}", file=sys.stderr)
        return 2
    if not args.no_plot:
        from fcasearch.train.calibration_plot import plot_calibration

        plot_calibration(
            result.table, result.correlations, out / "calibration.png", long_label=str(args.long)
        )
    with pd.option_context("display.float_format", "{:.3g}".format, "display.width", 120):
        print(
            f"\nrank correlation with accuracy at {args.long} ({len(result.table)} architectures, space {space.name}):"
        )
        print(result.correlations.to_string(index=False))
    note = significance_note(result.correlations)
    if note:
        print(note)
    print(
        f"\nwrote {out / 'calibration.csv'}, {out / 'correlations.csv'}"
        + ("" if args.no_plot else f", {out / 'calibration.png'}")
    )
    return 0
