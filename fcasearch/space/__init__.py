"""Search spaces: YAML definitions of FcaFormer design spaces, validated, sampled, counted.

``load_space`` reads a space file (format: ``search_spaces/README.md``) into a
:class:`SearchSpace`, which samples :class:`~fcasearch.spec.ArchSpec` members through an Optuna
trial or a numpy Generator, tests membership, mutates, and counts distinct architectures.
"""

from __future__ import annotations

from fcasearch.space.constraints import Constraints
from fcasearch.space.errors import SpaceError
from fcasearch.space.loading import list_shipped_spaces, load_space
from fcasearch.space.space import SearchSpace

__all__ = ["Constraints", "SearchSpace", "SpaceError", "list_shipped_spaces", "load_space"]
