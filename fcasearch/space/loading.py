"""Reading space files: a path, a shipped space's name, or an already-loaded mapping."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fcasearch.space.errors import SpaceError, did_you_mean
from fcasearch.space.schema import parse_space
from fcasearch.space.space import SearchSpace

__all__ = ["list_shipped_spaces", "load_space", "shipped_spaces_dir"]


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, except that a key repeated in one mapping is an error
    (PyYAML would silently keep the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping; keep one",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def shipped_spaces_dir() -> Path:
    """The ``search_spaces/`` folder of the source checkout (may not exist in a wheel install)."""
    return Path(__file__).resolve().parents[2] / "search_spaces"


def list_shipped_spaces() -> list[str]:
    """Names of the shipped spaces (``micro``, ``fcaformer_imagenet``, ``mobile``)."""
    folder = shipped_spaces_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    shipped = list_shipped_spaces()
    if p.suffix == "" and p.name == str(path) and p.name in shipped:
        return shipped_spaces_dir() / f"{p.name}.yaml"
    hint = did_you_mean(p.stem, shipped)
    raise SpaceError(
        f"no such file{hint}; give a space YAML path or a shipped name ({', '.join(shipped) or 'none found'})",
        source=str(path),
    )


def load_space(
    path_or_dict: str | Path | Mapping[str, Any], *, source: str | None = None
) -> SearchSpace:
    """Load and validate a search space.

    Args:
        path_or_dict: a YAML file, the bare name of a shipped space (``"micro"``), or a mapping
            already loaded.
        source: the name used in error messages (default: the file name, or ``<dict>``).

    Returns:
        The validated :class:`SearchSpace`.

    Raises:
        SpaceError: the file cannot be read or parsed, or breaks the format; the message starts
            with the file name and the key path and says how to fix it.
    """
    if isinstance(path_or_dict, Mapping):
        name = source or "<dict>"
        return SearchSpace(
            parse_space(path_or_dict, source=name, name=Path(name).stem if source else None)
        )
    if not isinstance(path_or_dict, (str, Path)):
        raise TypeError(
            f"load_space() takes a path, a shipped space's name or a mapping, "
            f"got {type(path_or_dict).__name__}"
        )
    path = _resolve(path_or_dict)
    name = source or path.name
    try:
        data = yaml.load(
            path.read_text(encoding="utf-8"), Loader=_StrictLoader
        )  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpaceError(f"not valid YAML: {problem}", source=name, path=where) from None
    except OSError as exc:
        raise SpaceError(f"cannot read: {exc.strerror or exc}", source=name) from None
    if data is None:
        raise SpaceError(
            "the file is empty; see search_spaces/README.md for the format", source=name
        )
    return SearchSpace(parse_space(data, source=name, name=path.stem))
