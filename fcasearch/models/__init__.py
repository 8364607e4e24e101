"""FcaFormer models: layers, blocks, stages, ``build_model(spec)`` and the paper-model registry."""

from __future__ import annotations

from fcasearch.models.registry import PAPER_DROP_PATH, get_spec, list_models

__all__ = ["PAPER_DROP_PATH", "get_spec", "list_models"]
