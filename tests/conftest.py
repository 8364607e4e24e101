"""Shared test setup: fixed seeds, fixed CPU threads, and the ``gpu`` marker's skip."""

from __future__ import annotations

import contextlib
import os
import random
import secrets

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Every Ray of the test process, and every cluster a test starts with `ray start` (they inherit
# this environment), use token auth with one token, set before Ray is imported: a driver reads
# RAY_AUTH_MODE once, when Ray is imported, so a process that joins clusters must have it from
# the start (as a user's search.py does from its shell). fcasearch's own local Ray needs none of
# this (fcasearch.search.ray_env gives it a token per process; test_ray_env checks that alone).
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

import numpy as np
import pytest
import torch

# Torch threads per test: 2, or the cores shared among pytest-xdist's workers (two workers on two
# cores get one thread each: more threads than cores makes OpenMP's spinning threads wait on each
# other).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))


def _versions() -> str:
    from importlib import metadata

    names = ("torch", "torchvision", "optuna", "ray", "sqlalchemy", "psycopg", "numpy")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return "fcasearch dependencies: " + ", ".join(found)


def pytest_report_header(config):
    """The versions a run tested against (CI installs the newest the bounds allow)."""
    return _versions()


def pytest_configure(config):
    if os.environ.get("CI") and config.get_verbosity() < 0:  # -q hides the header: say it anyway
        print(_versions(), flush=True)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA: no GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _fixed_seeds():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(_THREADS)
    yield


class ExclusiveSection:
    """A stand-in for a search's device lock held exclusively (``measure_cost(exclusive=...)``,
    ``Runtime.prepare(exclusive=...)``): call it for the context; it counts how often it was
    entered, says whether it is held now, and fails if entered while held."""

    def __init__(self) -> None:
        self.inside = False
        self.entered = 0

    @contextlib.contextmanager
    def __call__(self):
        assert not self.inside, "entered twice"
        self.entered += 1
        self.inside = True
        try:
            yield
        finally:
            self.inside = False


@pytest.fixture
def exclusive_section() -> ExclusiveSection:
    return ExclusiveSection()
