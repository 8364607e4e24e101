"""Fixtures of the model tests."""

from __future__ import annotations

import pytest

from fcasearch.models.kernels import fca_attention, kernel_status, load_kernels


@pytest.fixture(scope="module")
def kernel():
    """fcasearch's CPU kernels built and loaded (with ``kernel_helpers.needs_kernel``); the
    attention kernel's wrapper."""
    assert load_kernels(), kernel_status()
    return fca_attention
