"""The tiny search space and the fast search arguments the search tests share (a plain module:
test modules import it by name, which a conftest cannot safely be)."""

from __future__ import annotations

from pathlib import Path

# Four distinct networks (stage-2 depth x stage-3 width): small enough to see dedupe happen.
TINY_SPACE = """\
name: tiny
img_size: 32
in_chans: 1
num_classes: 10
conv_stages: 2
defaults: {head_dim: 8, mlp_ratio: 2}
stages:
  - {depth: 1, width: 8}
  - {depth: 1, width: 16}
  - {depth: [1, 2], width: 16}
  - {depth: 1, width: [16, 32]}
constraints: {max_params: 200000}
"""


def search_args(space: Path, out: Path, *extra: str) -> list[str]:
    return [
        "search",
        "--space", str(space),
        "--out", str(out),
        "--budget", "steps=3",
        "--batch-size", "32",
        "--threads", "1",
        "--no-progress",
        "--no-report",
        "--references", "none",  # reference models and the final rounds have tests of their own
        "--final-rounds", "0",
        *extra,
    ]  # fmt: skip
