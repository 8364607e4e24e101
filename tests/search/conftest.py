from __future__ import annotations

from pathlib import Path

import pytest

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


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


def _search_args(space: Path, out: Path, *extra: str) -> list[str]:
    return [
        "search",
        "--space", str(space),
        "--out", str(out),
        "--budget", "steps=3",
        "--batch-size", "32",
        "--threads", "1",
        "--no-progress",
        "--no-report",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def search_args():
    """Command-line arguments of a fast search: 3 training steps, no bar, no report."""
    return _search_args


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on loopback for the session (Debian's postgresql package)."""
    from pgserver import PostgresServer

    try:
        server = PostgresServer()
    except (FileNotFoundError, KeyError) as exc:
        pytest.skip(f"no PostgreSQL server binaries here ({exc}); .ci/run installs postgresql")
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()
