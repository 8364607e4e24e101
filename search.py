#!/usr/bin/env python
"""Run an architecture search: ``python search.py --space search_spaces/micro.yaml`` (see --help)."""

import sys

from fcasearch.cli import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
