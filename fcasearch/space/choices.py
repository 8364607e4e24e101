"""One searchable setting: its allowed values (fixed, categorical or an integer range).

The YAML forms of a value (``search_spaces/README.md`` documents them):

* a scalar: the setting is fixed (no sampler parameter);
* a list ``[a, b, c]`` or ``{choices: [a, b, c]}``: categorical;
* ``{low: 1, high: 6}`` or ``{low: 16, high: 64, step: 16}``: an integer range, both ends included.

Each key has a :class:`Rule` that checks and normalizes single values. TME placements are the one
setting whose values may themselves be lists; they are tuples here and strings such as ``"[0,2]"``
for Optuna (whose categorical choices must be None, bool, int, float or str).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fcasearch.space.errors import SpaceError, did_you_mean

__all__ = ["RULES", "Choice", "Rule", "decode", "encode", "parse_choice"]


class BadValue(Exception):
    """Internal: a single value broke its rule (the caller adds file and key path)."""


@dataclass(frozen=True)
class Choice:
    """The allowed values of one setting.

    Attributes:
        values: every allowed value in file order (a ``range`` for an integer range).
        path: where the file defines it (``stages[2].width``, ``defaults.tme``); empty for a
            built-in default.
    """

    values: tuple[Any, ...] | range
    path: str = ""

    @property
    def is_range(self) -> bool:
        return isinstance(self.values, range)

    @property
    def fixed(self) -> bool:
        """True when there is one value only (no sampler parameter is created)."""
        return len(self.values) == 1

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, bool) != isinstance(self.values[0], bool):
            return False  # True is not the integer 1 here
        return value in self.values

    def __len__(self) -> int:
        return len(self.values)

    def describe(self) -> str:
        """Short human form: ``[1, 2]``, ``16..64 step 16``."""
        if self.is_range:
            r = self.values
            return f"{r.start}..{r[-1]}" + (f" step {r.step}" if r.step != 1 else "")
        return "[" + ", ".join(_show(v) for v in self.values) + "]"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def encode(value: Any) -> Any:
    """A value as an Optuna categorical choice: tuples (explicit TME lists) become ``"[0,2]"``."""
    if isinstance(value, tuple):
        return "[" + ",".join(str(i) for i in value) + "]"
    return value


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, str) and value.startswith("["):
        inner = value[1:-1].strip()
        return tuple(int(i) for i in inner.split(",")) if inner else ()
    return value


# ---- rules for single values --------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """How to check one value of a key: what it must be, and whether ranges are allowed."""

    wants: str
    check: Callable[[Any], Any]
    ranges: bool = False


def _int_at_least(minimum: int) -> Callable[[Any], Any]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadValue(f"{_show_bad(value)} is not an integer")
        if value < minimum:
            raise BadValue(f"{value} is below the minimum {minimum}")
        return value

    return check


def _window(value: Any) -> int | None:
    if value is None:
        return None
    return _int_at_least(1)(value)


def _ratio(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise BadValue(f"{_show_bad(value)} is not a number")
    if value <= 0:
        raise BadValue(f"{value} must be > 0")
    return float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadValue(f"{_show_bad(value)} is not true or false")
    return value


def _tme(value: Any) -> str | tuple[int, ...]:
    if isinstance(value, str):
        if value in ("all_but_last", "none"):
            return value
        if value.startswith("every:"):
            k = value.split(":", 1)[1]
            if k.isdigit() and int(k) >= 1:
                return f"every:{int(k)}"
            raise BadValue(f"{value!r}: k in 'every:k' must be an integer >= 1, e.g. 'every:2'")
        raise BadValue(f"{value!r} is not a TME placement{did_you_mean(value, _TME_WORDS)}")
    if isinstance(value, (list, tuple)):
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
            raise BadValue(f"{list(value)!r} must list block indices (integers >= 0)")
        return tuple(sorted(set(value)))
    if isinstance(value, int) and not isinstance(value, bool):
        raise BadValue(
            f"a bare block index {value}: write one explicit placement as a list inside the "
            "choice list, e.g. tme: [[0, 2]] (or ['all_but_last', [0, 2]] for a choice)"
        )
    raise BadValue(f"{_show_bad(value)} is not a TME placement")


_TME_WORDS = ("all_but_last", "none", "every:2")


def _show_bad(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


_POS_INT = "an integer >= 1"
RULES: dict[str, Rule] = {
    "depth": Rule(_POS_INT, _int_at_least(1), ranges=True),
    "width": Rule(_POS_INT, _int_at_least(1), ranges=True),
    "heads": Rule(_POS_INT, _int_at_least(1), ranges=True),
    "head_dim": Rule(_POS_INT, _int_at_least(1), ranges=True),
    "merge_stride": Rule(_POS_INT, _int_at_least(1), ranges=True),
    "cross_window": Rule("an integer >= 1 or null (unlimited)", _window, ranges=True),
    "mlp_ratio": Rule("a number > 0", _ratio),
    "tme": Rule("'all_but_last', 'none', 'every:k' or a list of block indices", _tme),
    "enhancement": Rule("true or false", _flag),
    "scale_factors": Rule("true or false", _flag),
    "cross_bias": Rule("true or false", _flag),
    "img_size": Rule("an integer side in pixels", _int_at_least(1), ranges=True),
    "conv_stages": Rule("an integer >= 0", _int_at_least(0), ranges=True),
}
_RANGE_KEYS = ("low", "high", "step")


def parse_choice(raw: Any, rule: Rule, *, source: str, path: str) -> Choice:
    """Turn one YAML value (scalar, list, ``{choices}`` or ``{low, high, step}``) into a Choice.

    Raises:
        SpaceError: naming ``source`` and ``path``: a wrong type, an empty list, a duplicate,
            a range with low > high, an unknown key in the mapping form.
    """

    def fail(message: str) -> SpaceError:
        return SpaceError(message, source=source, path=path)

    forms = f"{rule.wants}, a list of them" + (", or {low, high, step}" if rule.ranges else "")
    if isinstance(raw, Mapping):
        keys = set(raw)
        if keys == {"choices"}:
            raw = raw["choices"]
            if not isinstance(raw, list):
                raise fail(f"choices: expected a list, got {_show_bad(raw)}")
        elif keys and keys <= set(_RANGE_KEYS):
            if not rule.ranges:
                raise fail(
                    f"an integer range is not allowed for this key; give {rule.wants} or a list"
                )
            return _parse_range(raw, rule, fail, path)
        else:
            allowed = ("choices", *_RANGE_KEYS) if rule.ranges else ("choices",)
            bad = sorted(str(k) for k in keys - set(allowed))
            if not bad:
                raise fail(
                    f"give either {{choices: [...]}} or {{low, high, step}}; got {dict(raw)!r}"
                )
            raise fail(
                f"unknown key {bad[0]!r}{did_you_mean(bad[0], allowed)} in the mapping form; "
                f"allowed keys: {', '.join(allowed)}"
            )
    if isinstance(raw, list):
        if not raw:
            raise fail(f"empty choice list; give at least one value ({rule.wants})")
        if rule is RULES["tme"] and all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw
        ):
            raise fail(
                f"{raw!r} reads as a choice between bare block indices; write one explicit "
                f"placement as tme: [{raw!r}] (a list inside the list), or several as "
                f"['all_but_last', {raw!r}]"
            )
        values: list[Any] = []
        for i, item in enumerate(raw):
            try:
                value = rule.check(item)
            except BadValue as exc:
                raise SpaceError(
                    f"{exc}; expected {rule.wants}", source=source, path=f"{path}[{i}]"
                ) from None
            if any(value == v and type(value) is type(v) for v in values):
                raise SpaceError(
                    f"{_show(value)} is listed twice; list each value once",
                    source=source,
                    path=f"{path}[{i}]",
                )
            values.append(value)
        return Choice(tuple(values), path)
    try:
        return Choice((rule.check(raw),), path)
    except BadValue as exc:
        raise fail(f"{exc}; expected {forms}") from None


def _parse_range(
    raw: Mapping[str, Any], rule: Rule, fail: Callable[[str], SpaceError], path: str
) -> Choice:
    missing = [k for k in ("low", "high") if k not in raw]
    if missing:
        raise fail(
            f"integer range without {missing[0]!r}; write {{low: 1, high: 4}} (step optional)"
        )
    ends = {}
    for key in _RANGE_KEYS:
        value = raw.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(f"{key}: {_show_bad(value)} must be an integer")
        ends[key] = value
    low, high, step = ends["low"], ends["high"], ends["step"]
    if step < 1:
        raise fail(f"step: {step} must be >= 1")
    if low > high:
        raise fail(f"range low {low} > high {high}; swap them ({{low: {high}, high: {low}}})")
    if (high - low) % step:
        fixed = low + (high - low) // step * step
        raise fail(
            f"range {low}..{high} is not a whole number of steps of {step}; use high: {fixed} "
            f"(or {fixed + step})"
        )
    for key in ("low", "high"):
        try:
            rule.check(ends[key])
        except BadValue as exc:
            raise fail(f"{key}: {exc}; expected {rule.wants}") from None
    return Choice(range(low, high + 1, step), path)
