"""Rebuilding a run's Optuna study from its journal, ``trials.jsonl``.

Every finished trial is appended and fsynced to ``trials.jsonl`` before the study is told, so
the log holds every completed trial even when ``study.db`` is lost or overwritten. The rebuilt
study has one trial per logged row, under the row's own trial number (numbers the log lacks,
trials a killed run left unfinished, become failed trials that count for nothing), with the
row's parameters, values, constraint and status: samplers continue from it as from the old one.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from fcasearch.search.options import SearchError, SearchOptions
from fcasearch.search.study import open_study, result_from_row, sample_architecture, tell
from fcasearch.spec import ArchSpec
from fcasearch.storage.records import RunDir, TrialLog

if TYPE_CHECKING:
    from fcasearch.space import SearchSpace

__all__ = ["move_aside", "rebuild_study"]


def move_aside(db: Path) -> Path | None:
    """Rename a broken SQLite file (and its -wal/-shm files) to ``<name>.broken-<time>``; the
    new name, or ``None`` when there was no file."""
    if not db.exists():
        return None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = db.with_name(f"{db.name}.broken-{stamp}")
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        if side.exists():
            side.replace(target.with_name(target.name + suffix))
    db.replace(target)
    return target


def rebuild_study(
    run: RunDir, options: SearchOptions, space: SearchSpace, study_name: str
) -> tuple[int, Path | None]:
    """Replace the run's ``study.db`` by a study rebuilt from ``trials.jsonl``.

    Returns:
        (rows put back, where the old file was moved, if there was one).

    Raises:
        SearchError: the run has no rows to rebuild from, or a row's architecture is not in the
            run's space.
    """
    rows = TrialLog(run).rows()
    if not rows:
        raise SearchError(f"--rebuild-study: {run.trials_log} holds no trial to rebuild from")
    by_number = {int(r["trial"]): r for r in rows if r.get("spec") and r.get("status")}
    moved = move_aside(run.study_db)
    sampler = optuna.samplers.RandomSampler(seed=options.seed)  # every parameter is given
    study = open_study(options, run.storage_url(), study_name, sampler=sampler, space=space)
    run_dir = str(run.root.resolve())
    for number in range(max(by_number) + 1):
        row = by_number.get(number)
        if row is None:  # no row: a trial the killed run never finished
            study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
            continue
        spec = ArchSpec.from_json(row["spec"])
        try:
            params = space.to_params(spec)
        except (KeyError, ValueError) as exc:
            raise SearchError(
                f"--rebuild-study: trial {number} of {run.trials_log} is not an architecture of "
                f"the run's space ({exc})"
            ) from None
        study.enqueue_trial(params, skip_if_exists=False)
        trial = study.ask()
        sample_architecture(
            trial, space, run_dir=run_dir, run_id=run.owner_id, budget=row.get("budget") or None
        )
        tell(study, trial, result_from_row(row, spec), options.objectives, space.constraints)
    return len(by_number), moved
