"""What a run's accuracy depends on: the data it trained on and its training budget.

Accuracy is a count of correct validation images of the run's own data after the run's own
training budget, so runs on another dataset, another subset of one or another budget
(``epochs=1`` against ``steps=5``) do not share a front silently, as runs on other hardware or
runtimes do not (:func:`fcasearch.report.info.check_hardware`,
:func:`fcasearch.report.final.check_runtimes`). Read from ``run.yaml``:

* the data: ``options.data`` (the dataset's name), ``options.subset_classes``,
  ``options.subset_fraction`` (1.0 is every image, as no fraction is), and the ``data:`` block
  the search writes (``name``, ``classes``, ``train_images``, ``val_images``) where present. An
  ``imagefolder`` dataset is its folder: runs with the block are compared on its counts, so the
  same tree moved or mounted elsewhere is the same data; ``options.data_root`` is compared only
  between runs without the block, which record nothing else of the tree;
* the budget: ``options.budget`` (else the top-level ``budget``).

Only runs that record a setting are compared on it: a run from before it was recorded is never
refused (the report notes that it could not be checked).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fcasearch.report.info import RunData

__all__ = [
    "MixedBudgetError",
    "MixedDataError",
    "budget_text",
    "check_budgets",
    "check_data",
    "data_text",
    "run_budget",
    "subtitle_training",
    "training_text",
    "unrecorded_note",
]

# objectives whose values depend on the data (accuracy; zero-cost proxies read a batch of it)
_DATA_PREFIXES = ("proxy.",)
# ... and on the training budget
_TRAINED = ("accuracy",)


def _data_dependent(names: Sequence[str]) -> list[str]:
    return [n for n in names if n in _TRAINED or n.startswith(_DATA_PREFIXES)]


def _grouped(settings: dict[str, str]) -> str:
    """``run, run: setting; run: setting`` from run label -> setting."""
    by: dict[str, list[str]] = {}
    for label, text in settings.items():
        by.setdefault(text, []).append(label)
    return "; ".join(f"{', '.join(labels)}: {text}" for text, labels in by.items())


def _depend(objectives: Sequence[str]) -> str:
    one = len(objectives) == 1
    return f"Objective{'' if one else 's'} {', '.join(objectives)} depend{'s' if one else ''}"


class MixedDataError(ValueError):
    """Data-dependent objectives (accuracy) come from runs trained on different data."""

    def __init__(self, settings: dict[str, str], objectives: Sequence[str]) -> None:
        self.settings = dict(settings)
        super().__init__(
            f"the runs were trained and validated on different data: {_grouped(settings)}. "
            f"{_depend(objectives)} on the data (accuracy counts correct images of each run's "
            "own validation data), so values are not comparable across datasets or subsets. "
            "Report each dataset's runs separately, or pass --allow-mixed-data "
            "(allow_mixed_data=True) to compare them anyway"
        )


class MixedBudgetError(ValueError):
    """Accuracy comes from runs trained with different budgets."""

    def __init__(self, settings: dict[str, str], objectives: Sequence[str]) -> None:
        self.settings = dict(settings)
        super().__init__(
            f"the runs trained with different budgets: {_grouped(settings)}. "
            f"{_depend(objectives)} on how long each model trained, so values are not "
            "comparable across budgets. Report each budget's runs separately, or pass "
            "--allow-mixed-budgets (allow_mixed_budgets=True) to compare them anyway"
        )


def _options(run: RunData) -> dict[str, Any]:
    opts = run.config.get("options")
    return opts if isinstance(opts, dict) else {}


def _block(run: RunData) -> dict[str, Any]:
    block = run.config.get("data")
    return block if isinstance(block, dict) else {}


def _data_fields(run: RunData) -> dict[str, Any]:
    """The data settings a run records (absent keys: not recorded): ``dataset``, ``subset``,
    ``images`` (classes, train and validation images) and, for an ``imagefolder`` run without
    those counts, ``root`` (module docstring)."""
    opts, block = _options(run), _block(run)
    out: dict[str, Any] = {}
    counts = tuple(block.get(k) for k in ("classes", "train_images", "val_images"))
    name = block.get("name") or opts.get("data")
    if name:
        out["dataset"] = str(name)
        root = opts.get("data_root")
        if out["dataset"] == "imagefolder" and root and all(v is None for v in counts):
            out["root"] = str(root)
    if "subset_classes" in opts or "subset_fraction" in opts:
        out["subset"] = (opts.get("subset_classes") or None, _fraction(opts.get("subset_fraction")))
    if any(v is not None for v in counts):
        out["images"] = counts
    return out


def _fraction(value: Any) -> Any:
    """A subset fraction as compared: None for every image (none given, or 1.0)."""
    if value is None or value == "":
        return None
    try:
        return None if float(value) == 1.0 else float(value)
    except (TypeError, ValueError):
        return value  # unparsable: compared as written


def data_text(run: RunData) -> str:
    """The run's data in a few words (``digits (0.1 of each class), 143/36 train/val images``);
    empty when the run records none."""
    fields = _data_fields(run)
    if not fields:
        return ""
    text = fields.get("dataset", "unrecorded dataset")
    root = _options(run).get("data_root")
    if text == "imagefolder" and root:  # shown whether or not it is compared
        text += f" at {root}"
    classes, fraction = fields.get("subset", (None, None))
    chosen = [
        f"first {classes} classes" if classes else "",
        f"{fraction:g} of each class" if isinstance(fraction, int | float) else "",
    ]
    chosen = [c for c in chosen if c]
    if chosen:
        text += f" ({', '.join(chosen)})"
    _, train, val = fields.get("images", (None, None, None))
    if train is not None and val is not None:
        text += f", {train}/{val} train/val images"
    return text


def run_budget(run: RunData) -> str | None:
    """The run's training budget as ``run.yaml`` records it (``epochs=2``), or None."""
    budget = _options(run).get("budget") or run.config.get("budget")
    return str(budget).replace(" ", "") if budget else None


def budget_text(budget: str) -> str:
    """A budget in words: ``epochs=2`` -> ``2 epochs``, ``epochs=5,seconds=60`` -> ``5 epochs
    or 60 s`` (the first reached ends training), ``dry=1`` -> ``dry run (synthetic accuracy)``;
    the text itself when it does not parse."""
    parts = []
    for item in budget.split(","):
        key, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            return budget
        shown = f"{number:g}"
        if key == "epochs":
            parts.append(f"{shown} epoch{'' if number == 1 else 's'}")
        elif key == "steps":
            parts.append(f"{shown} step{'' if number == 1 else 's'}")
        elif key == "seconds":
            parts.append(f"{shown} s")
        elif key == "dry":
            return "dry run (synthetic accuracy)"
        else:
            return budget
    return " or ".join(parts)


def training_text(run: RunData) -> str:
    """What the run's accuracy was measured on: ``digits, 1438/359 train/val images, 2 epochs``
    (what is recorded; empty for a run that records neither data nor budget)."""
    budget = run_budget(run)
    parts = [data_text(run), budget_text(budget) if budget else ""]
    return ", ".join(p for p in parts if p)


def _check(
    runs: Sequence[RunData],
    recorded: dict[str, dict[str, Any]],
    texts: dict[str, str],
    dependent: list[str],
    allow_mixed: bool,
    error: type[MixedDataError] | type[MixedBudgetError],
    what: str,
) -> list[str]:
    fields = {k for f in recorded.values() for k in f}
    mixed = any(len({repr(f[k]) for f in recorded.values() if k in f}) > 1 for k in fields)
    if not mixed:
        return []
    settings = {r.label: texts[r.label] or "not recorded" for r in runs}
    if dependent and not allow_mixed:
        raise error(settings, dependent)
    if dependent:
        return [
            f"Mixed {what} allowed by the user: {', '.join(dependent)} of runs trained with "
            f"different {what} ({_grouped(settings)}) share the front and the hypervolumes."
        ]
    return [
        f"The runs differ in {what} ({_grouped(settings)}); no objective depends on it, but "
        "their accuracy columns do: compare those within one setting only."
    ]


def check_data(runs: Sequence[RunData], allow_mixed: bool = False) -> list[str]:
    """Refuse to compare accuracy (and zero-cost proxies) of runs on different data.

    Runs differ when a setting recorded by more than one of them (the dataset, its subset,
    the number of classes and of train and validation images) differs; a run that records
    none is not compared.

    Returns:
        Notes for the report.

    Raises:
        MixedDataError: the runs differ, an objective depends on the data, and ``allow_mixed``
            is False.
    """
    recorded = {r.label: _data_fields(r) for r in runs}
    texts = {r.label: data_text(r) for r in runs}
    dependent = _data_dependent([o.name for o in runs[0].objectives])
    return _check(runs, recorded, texts, dependent, allow_mixed, MixedDataError, "data")


def check_budgets(runs: Sequence[RunData], allow_mixed: bool = False) -> list[str]:
    """Refuse to compare accuracy of runs trained with different budgets (``options.budget``;
    a run that records none is not compared).

    Returns:
        Notes for the report.

    Raises:
        MixedBudgetError: the runs differ, accuracy is an objective, and ``allow_mixed`` is
            False.
    """
    budgets = {r.label: run_budget(r) for r in runs}
    recorded = {label: {"budget": b} if b else {} for label, b in budgets.items()}
    texts = {label: f"{b} ({budget_text(b)})" if b else "" for label, b in budgets.items()}
    dependent = [o.name for o in runs[0].objectives if o.name in _TRAINED]
    return _check(runs, recorded, texts, dependent, allow_mixed, MixedBudgetError, "budgets")


def unrecorded_note(runs: Sequence[RunData]) -> str:
    """A note naming the runs that record no data or budget when others do (their accuracy
    could not be checked against the others'); empty otherwise."""
    if len(runs) < 2:
        return ""
    silent = [r.label for r in runs if not _data_fields(r) and not run_budget(r)]
    if not silent or len(silent) == len(runs):
        return ""
    return (
        f"Run(s) {', '.join(silent)} record no dataset or training budget (written before "
        "run.yaml recorded them): their accuracy is compared with the other runs' unchecked."
    )


def subtitle_training(runs: Sequence[RunData]) -> tuple[str, dict[str, str]]:
    """What the runs trained on, for the report's subtitle: one text when every run shares
    it (``""`` when none records it), else each run's text by label."""
    texts = {r.label: training_text(r) for r in runs}
    if len(set(texts.values())) == 1:
        return next(iter(texts.values())), {}
    return "", texts
