"""What the tests of fcasearch's CPU kernels share: the skip mark where they cannot be built, and
a dispatch mode that records the operators a call runs."""

from __future__ import annotations

import pytest
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.cpp_extension import is_ninja_available

from fcasearch.models.compiled import cpp_compiler_available

BUILDABLE = cpp_compiler_available() and is_ninja_available()
needs_kernel = pytest.mark.skipif(not BUILDABLE, reason="building the kernel needs g++ and ninja")


class OpNames(TorchDispatchMode):
    """Names of the operators dispatched (``namespace.op``, overloads merged)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))
