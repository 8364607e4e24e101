"""``python -m fcasearch ...``: the same as the ``fcasearch`` console script."""

from __future__ import annotations

import sys

from fcasearch.cli import main

if __name__ == "__main__":
    sys.exit(main())
