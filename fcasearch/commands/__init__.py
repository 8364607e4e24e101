"""Subcommands of the ``fcasearch`` CLI: each module has ``add_arguments`` and ``run``.

Modules here import only argparse-level things at import time; heavy imports go inside ``run``.
"""
