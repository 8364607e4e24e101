"""Build a Pareto report: ``python report.py results/<run> [more runs] [options]``.

The same as ``fcasearch report``; see ``python report.py --help``.
"""

from __future__ import annotations

import sys

from fcasearch.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
