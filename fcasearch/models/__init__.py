"""FcaFormer models: layers, blocks, stages, ``build_model(spec)`` and the paper-model registry."""

from __future__ import annotations

from fcasearch.models.checkpoint import (
    CheckpointError,
    load_reference_checkpoint,
    reference_state_dict_shapes,
    to_reference_state_dict,
)
from fcasearch.models.fca import ATTENTION_IMPLS, attention_impl
from fcasearch.models.fcaformer import FcaFormer, build_model
from fcasearch.models.fuse import calibrate_batchnorm, fuse_for_inference
from fcasearch.models.registry import PAPER_DROP_PATH, get_spec, list_models

__all__ = [
    "ATTENTION_IMPLS",
    "PAPER_DROP_PATH",
    "CheckpointError",
    "FcaFormer",
    "attention_impl",
    "build_model",
    "calibrate_batchnorm",
    "fuse_for_inference",
    "get_spec",
    "list_models",
    "load_reference_checkpoint",
    "reference_state_dict_shapes",
    "to_reference_state_dict",
]
