"""Where sampled values come from: an Optuna trial, a numpy Generator, or a parameter dict.

A picker answers ``pick(name, choice)`` for one parameter; a fixed choice is answered without a
parameter. Every picker remembers what it answered (``params``, Optuna-encoded), so building a spec
through any picker also gives the parameter dict that reproduces it, and a name asked twice (a
shared key) gets the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fcasearch.space.choices import Choice, decode, encode
from fcasearch.space.errors import SpaceError

__all__ = [
    "ParamsPicker",
    "Picker",
    "RngPicker",
    "TrialPicker",
    "make_picker",
    "optuna_distribution",
]


class Picker:
    """Base: caches answers by parameter name and records them in ``params``."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def pick(self, name: str, choice: Choice) -> Any:
        """The value of parameter ``name`` (a member of ``choice``)."""
        if choice.fixed:
            return choice.values[0]
        if name in self.params:
            return decode(self.params[name])
        value = self._draw(name, choice)
        self.params[name] = encode(value)
        return value

    def _draw(self, name: str, choice: Choice) -> Any:
        raise NotImplementedError


class RngPicker(Picker):
    """Uniform over each parameter's values (what Optuna's RandomSampler does)."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.rng = rng

    def _draw(self, name: str, choice: Choice) -> Any:
        return choice.values[int(self.rng.integers(len(choice.values)))]


def optuna_distribution(choice: Choice) -> Any:
    """The Optuna distribution a trial suggests ``choice`` with (what :class:`TrialPicker`
    asks): an ``IntDistribution`` for a range, a ``CategoricalDistribution`` of the encoded
    values otherwise."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if choice.is_range:
        r = choice.values
        return IntDistribution(r.start, r[-1], step=r.step)
    return CategoricalDistribution([encode(v) for v in choice.values])


class TrialPicker(Picker):
    """Asks an Optuna trial (``suggest_int`` for ranges, ``suggest_categorical`` otherwise)."""

    def __init__(self, trial: Any) -> None:
        super().__init__()
        self.trial = trial

    def _draw(self, name: str, choice: Choice) -> Any:
        if choice.is_range:
            r = choice.values
            return int(self.trial.suggest_int(name, r.start, r[-1], step=r.step))
        return decode(self.trial.suggest_categorical(name, [encode(v) for v in choice.values]))


class ParamsPicker(Picker):
    """Reads a parameter dict (``trial.params``, ``to_params``); a missing name goes to
    ``fallback`` (or is an error without one). Names the build never asks for are ignored."""

    def __init__(
        self, params: Mapping[str, Any], fallback: Picker | None = None, source: str = "params"
    ) -> None:
        super().__init__()
        self.given = dict(params)
        self.fallback = fallback
        self.source = source

    def _draw(self, name: str, choice: Choice) -> Any:
        if name not in self.given:
            if self.fallback is None:
                raise SpaceError(
                    f"missing; this architecture needs {name} (one of {choice.describe()})",
                    source=self.source,
                    path=name,
                )
            return self.fallback._draw(name, choice)
        value = decode(self.given[name])
        if value not in choice:
            raise SpaceError(
                f"{value!r} is not one of {choice.describe()}", source=self.source, path=name
            )
        return value


def make_picker(trial_or_rng: Any) -> Picker:
    """A picker for an Optuna trial (anything with ``suggest_categorical``) or a numpy Generator."""
    if isinstance(trial_or_rng, Picker):
        return trial_or_rng
    if isinstance(trial_or_rng, np.random.Generator):
        return RngPicker(trial_or_rng)
    if hasattr(trial_or_rng, "suggest_categorical") and hasattr(trial_or_rng, "suggest_int"):
        return TrialPicker(trial_or_rng)
    raise TypeError(
        f"sample() needs an optuna trial or a numpy.random.Generator (np.random.default_rng(seed)), "
        f"got {type(trial_or_rng).__name__}"
    )
