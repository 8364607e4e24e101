"""Shared test setup: fixed seeds, fixed CPU threads, and the ``gpu`` marker's skip."""

from __future__ import annotations

import os
import random

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import pytest
import torch


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
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
