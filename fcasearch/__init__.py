"""fcasearch: hardware-aware architecture search and efficiency benchmarks for FcaFormer.

Importing the package is light: it never imports ray, pynvml or seaborn (those load only in the
code paths that need them).
"""

from __future__ import annotations

from fcasearch.spec import ArchSpec, SpecError, StageSpec

__all__ = ["ArchSpec", "SpecError", "StageSpec", "__version__"]
__version__ = "0.1.0"
