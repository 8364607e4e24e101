"""Training budgets: epochs, optimizer steps or seconds (any combination; the first reached wins).

A ``dry=S`` budget trains nothing: a search's trial sleeps S seconds instead (a dry run, for
scaling measurements and fault tests; with ``epochs=N`` the sleep is split into N reported
epochs). The trainer refuses it.

``str(budget)`` is stable (``epochs=2``, ``steps=100``, ``epochs=5,seconds=60``): the search uses
it in dedupe keys, so the same budget always prints the same way, and ``Budget.parse`` reads it
back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Budget", "BudgetError"]

_FIELDS = ("epochs", "steps", "seconds", "dry")


class BudgetError(ValueError):
    """A budget that cannot be used; the message names the field and the fix."""


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Budget:
    """How long one training run may go on.

    Attributes:
        epochs: passes over the training split; fractions allowed (0.5 = half the steps of one).
        steps: optimizer steps.
        seconds: seconds of training steps (validation excluded); the run stops at the end of the
            step that crosses it.
        dry: seconds a dry-run trial sleeps instead of training (no training at all).
    """

    epochs: float | None = None
    steps: int | None = None
    seconds: float | None = None
    dry: float | None = None

    def __post_init__(self) -> None:
        if all(getattr(self, f) is None for f in _FIELDS):
            raise BudgetError(
                "budget: give at least one of epochs, steps, seconds (e.g. 'epochs=2'), or dry "
                "for a dry run"
            )
        for name in _FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise BudgetError(f"budget.{name}: {value!r} must be a positive number")
        if self.steps is not None:
            if float(self.steps) != int(self.steps):
                raise BudgetError(f"budget.steps: {self.steps!r} must be a whole number of steps")
            object.__setattr__(self, "steps", int(self.steps))
        if self.dry is not None and (self.steps is not None or self.seconds is not None):
            raise BudgetError(
                f"budget: {self}: a dry run (dry=S) sleeps S seconds instead of training; it "
                "takes epochs=N (reports per epoch) but not steps or seconds"
            )
        for name in ("epochs", "seconds", "dry"):
            value = getattr(self, name)
            if value is not None:
                number = float(value)
                object.__setattr__(self, name, int(number) if number.is_integer() else number)

    def __str__(self) -> str:
        return ",".join(
            f"{n}={_fmt(getattr(self, n))}" for n in _FIELDS if getattr(self, n) is not None
        )

    @classmethod
    def parse(cls, text: str | Budget) -> Budget:
        """Read ``"epochs=2"``, ``"steps=100"``, ``"seconds=30"`` or a comma-separated mix.

        Raises:
            BudgetError: for an unknown key, a repeated key or a value that is not a number.
        """
        if isinstance(text, Budget):
            return text
        values: dict[str, float] = {}
        for part in str(text).replace(" ", "").split(","):
            key, sep, raw = part.partition("=")
            if not sep or key not in _FIELDS:
                raise BudgetError(
                    f"budget: {text!r}: each part must be epochs=N, steps=N or seconds=N "
                    "(comma-separated), e.g. 'epochs=2', or dry=S for a dry run"
                )
            if key in values:
                raise BudgetError(f"budget: {text!r} gives {key} twice")
            try:
                values[key] = float(raw)
            except ValueError:
                raise BudgetError(f"budget.{key}: {raw!r} in {text!r} is not a number") from None
        return cls(**values)

    def total_steps(self, steps_per_epoch: int) -> int | None:
        """Steps this budget allows (the smaller of epochs and steps); ``None`` if only seconds."""
        limits = []
        if self.epochs is not None:
            limits.append(max(1, round(self.epochs * steps_per_epoch)))
        if self.steps is not None:
            limits.append(self.steps)
        return min(limits) if limits else None
