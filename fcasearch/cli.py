"""One command line for the whole project: ``fcasearch search|report|profile|calibrate|summary``.

Each subcommand lives in its own module under :mod:`fcasearch.commands`, exposing
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``fcasearch --help`` stays fast and heavy optional imports (ray, seaborn,
pynvml) happen only where they are needed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module under fcasearch.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": (
        "summary",
        "build an FcaFormer model (registry name, spec JSON, RUN_DIR:ARCH_ID) and print its summary",
    ),
    "search": ("search", "run a multi-objective architecture search"),
    "report": ("report", "build a Pareto report from one or more results directories"),
    "profile": ("profile", "measure params, MACs, latency, memory and energy on this hardware"),
    "export": ("export", "export a model (registry, spec JSON, RUN_DIR:ARCH_ID) to ONNX, verified"),
    "calibrate": (
        "calibrate",
        "correlate short-budget training and zero-cost proxies with long-budget accuracy",
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand's module is imported and filled in."""
    parser = argparse.ArgumentParser(
        prog="fcasearch",
        description="Hardware-aware architecture search and benchmarks for FcaFormer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if only is None or only == name:
            importlib.import_module(f"fcasearch.commands.{module}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(f"fcasearch.commands.{args._module}")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
