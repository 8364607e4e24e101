from __future__ import annotations

from pathlib import Path

import pytest
from searchkit import TINY_SPACE
from searchkit import search_args as _search_args


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


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
