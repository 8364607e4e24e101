"""The error type of search-space files, and the helpers that word its messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["SpaceError", "did_you_mean"]


class SpaceError(ValueError):
    """A search space that cannot be used as written.

    The message starts with the file (or source) name and the key path, then says what is wrong
    and how to fix it, e.g. ``micro.yaml: stages[2].heads: 3 does not divide width 16; ...``.

    Attributes:
        source: the file name (or ``<dict>``) the bad value came from, when known.
        path: the key path inside it (``stages[2].heads``), when known.
    """

    def __init__(self, message: str, *, source: str | None = None, path: str | None = None):
        self.source = source
        self.path = path
        prefix = "".join(f"{part}: " for part in (source, path) if part)
        super().__init__(prefix + message)


def did_you_mean(word: str, allowed: Iterable[str]) -> str:
    """`` (did you mean 'heads'?)`` for a close match among ``allowed``, else an empty string."""
    match = difflib.get_close_matches(str(word), sorted(allowed), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
