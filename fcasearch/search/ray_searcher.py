"""The Ray Tune searcher of a search: the run's Optuna study, driven by its ask/tell API.

:class:`StudySearcher` is a plain Tune :class:`~ray.tune.search.Searcher`: ``suggest`` asks the
study for a trial and samples the architecture on it (the same sampling as the local executor),
``on_trial_complete`` logs the trial's row (``trials.jsonl``, fsynced) and then tells the study.
It uses only public APIs of Optuna and Ray.

Tune pickles its searcher (``tuner.pkl`` and the experiment checkpoints), so what the searcher
pickles is plain data: the storage URL and study name, the options and space as dicts, the run
folder, and Tune's trial ids mapped to their configs. The study, the trial log, the progress bar
and the Optuna trials in flight live beside it and are opened again, lazily, after unpickling
(``tune.Tuner.restore`` works on a run's Tune folder).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.search import Searcher

from fcasearch.search.objective import checkpoint_path, data_fault, pruned_reason, rung_reached
from fcasearch.search.options import METRICS, SearchOptions
from fcasearch.search.progress import SearchProgress
from fcasearch.search.schedulers import RUNG_VALUES_ATTR
from fcasearch.search.shared import find_owner, shared_metrics
from fcasearch.search.study import (
    claim_slot,
    counted_trials,
    open_study,
    result_from_row,
    sample_architecture,
    tell,
    values_for,
)
from fcasearch.spec import ArchSpec
from fcasearch.storage.records import RunDir, TrialLog

__all__ = [
    "FailureRecorder",
    "StudySearcher",
    "error_summary",
    "row_for_failed",
    "row_for_stopped",
    "trial_config",
]

# the reason of a failed trial when Ray never said why
_NO_REASON = "the Ray trial raised or its worker died (see the Ray session logs)"

_LIVE = (
    "_study", "_progress", "_trials", "_log", "_space", "_opts", "_cache", "_pruner",
    "_errors_told", "_pending_errors",
)  # fmt: skip


def trial_config(
    ot_trial: optuna.Trial,
    space: Any,
    cache: dict[str, dict[str, Any]],
    run: str,
    *,
    run_dir: str | None = None,
    run_id: str | None = None,
    budget: str | None = None,
    study: optuna.Study | None = None,
    runtime: str | None = None,
) -> dict[str, Any]:
    """The Tune config of one trial: its sampled architecture (marked in the study at once, so
    NSGA-II's next children avoid it while it runs) and, if a completed trial already measured
    that architecture (in this run's ``cache``, or, given the shared ``study``, by another
    driver on the same ``runtime``), the row to reuse instead of training again."""
    from fcasearch.search.objective import reused_result

    label = runtime if study is not None else None
    spec = sample_architecture(
        ot_trial, space, run_dir=run_dir, run_id=run_id, budget=budget, runtime=label
    )
    cfg: dict[str, Any] = {"spec": spec.to_json(), "trial_number": ot_trial.number, "run": run}
    cached = cache.get(spec.arch_id)
    if cached is None and study is not None and budget is not None:
        owner = find_owner(study, ot_trial.number, spec.arch_id, budget, runtime=label)
        if owner is not None and owner.state == optuna.trial.TrialState.COMPLETE:
            cached = dict(owner.user_attrs["metrics"])
    if cached is not None:
        cfg["reuse"] = reused_result(cached, spec).row(ot_trial.number, run)
    return cfg


def row_for_stopped(
    spec: ArchSpec,
    trial_number: int,
    run: str,
    last: dict[str, Any] | None,
    error: bool,
    budget: str,
    rung: int | None = None,
    reason: str = "",
    scheduler: str = "the scheduler",
) -> dict[str, Any]:
    """The row of a Tune trial that ended without its final report and without the row it ends
    with if stopped (``row_if_stopped``, sent at rungs by the trainable): failed (it raised, or
    its worker or node died: ``reason`` says how, when known) or pruned (``scheduler`` stopped it
    at ``rung``); costs and accuracy from its last report, as the schedulers saw them (an
    unstable latency as its p90)."""
    from fcasearch.measure.counting import count_macs, count_params
    from fcasearch.search.objective import TrialResult

    res = TrialResult(spec=spec, status="failed" if error else "pruned", budget=budget)
    res.reason = (reason or _NO_REASON) if error else f"stopped by {scheduler}"
    res.metrics = {"params": float(count_params(spec)), "macs": float(count_macs(spec))}
    last = last or {}
    res.metrics.update({k: float(v) for k, v in last.items() if k in METRICS})
    res.epochs = float(last.get("epoch", 0))  # epochs completed (the trainer counts from 1)
    res.rung = rung
    if rung is not None and not error:
        res.reason = pruned_reason(scheduler, rung, res.epochs)
    row = res.row(trial_number, run)
    row.update(
        threads=int(last.get("threads", 0)),
        ray_node=str(last.get("ray_node", "")),
        cuda_visible_devices=str(last.get("cuda_visible_devices", "")),
    )
    return row


def row_for_failed(measured: dict[str, Any], reason: str = "") -> dict[str, Any]:
    """The row of a Tune trial that failed for good without its final report (its worker or
    node died), from the row its last per-epoch report carried (``row_so_far`` or
    ``row_if_stopped``: what was measured, as the local executor's row has it: the median
    latency, its stability columns, attempts, notes; the accuracy, epochs and seconds of that
    epoch): status failed and ``reason`` (how it failed, when known).

    Its notes say that the seconds stop at that report, and no longer name the weights saved at a
    rung: a failed trial keeps none, as on the local executor (the caller deletes the file).
    """
    row = dict(measured)
    row.update(status="failed", reason=reason or _NO_REASON)
    notes = json.loads(row.get("notes") or "{}")
    if notes.pop("weights", None) is not None:
        notes["weights"] = "removed: the trial failed after saving them at a rung"
    epoch = row.get("epochs")
    notes["seconds"] = (
        f"train_seconds and trial_seconds run to the trial's last epoch report (epoch "
        f"{epoch if epoch is not None else '?'}); the time after it, until it failed, is not in them"
    )
    row["notes"] = json.dumps(notes, sort_keys=True)
    return row


class StudySearcher(Searcher):
    """Tune's searcher over the run's Optuna study (see the module doc).

    Args:
        storage: the study's storage URL.
        study_name: the study's name.
        options: the run's options (``SearchOptions.to_dict()``).
        space: the run's space (``SearchSpace.to_dict()``).
        run_root: the run's results folder (``trials.jsonl`` is appended there).
        n_trials: trials the study should hold in all; ``None``: until Tune stops.
        shared: the study may have other drivers (reuse their complete trials, share ours).
        study: the already open study (the driver's); opened from ``storage`` when absent.
        progress: the driver's progress bar, if any (never pickled).
    """

    def __init__(
        self,
        *,
        storage: str,
        study_name: str,
        options: dict[str, Any],
        space: dict[str, Any],
        run_root: str,
        n_trials: int | None,
        shared: bool = False,
        study: optuna.Study | None = None,
        progress: SearchProgress | None = None,
    ) -> None:
        super().__init__(metric=None, mode=None)
        self.storage = storage
        self.study_name = study_name
        self.options = dict(options)
        self.space = dict(space)
        self.run_root = str(run_root)
        self.n_trials = n_trials
        self.shared = shared
        self.configs: dict[str, dict[str, Any]] = {}  # Tune trial id -> its config
        self.last: dict[str, dict[str, Any]] = {}  # Tune trial id -> its last epoch report
        # Tune trial id -> the row (JSON) its last epoch report carried, until it finishes
        self.measured: dict[str, str] = {}
        self.finished: set[str] = set()
        self.rung_values: dict[str, dict[str, list[float]]] = {}  # Tune trial id -> its rungs
        self.failures: dict[str, list[str]] = {}  # Tune trial id -> attempts lost (retried)
        self.ran = 0
        self.data_fault: str | None = None  # a trial failed on the data: no new trial starts
        self._attach(study, progress)

    # -- pickling: plain data only -------------------------------------------------------------
    def _attach(self, study: optuna.Study | None, progress: SearchProgress | None) -> None:
        self._study = study
        self._progress = progress
        self._trials: dict[str, optuna.Trial] = {}  # Tune trial id -> Optuna trial in flight
        self._log: TrialLog | None = None
        self._space = None
        self._opts: SearchOptions | None = None
        self._cache: dict[str, dict[str, Any]] | None = None
        self._errors_told = False  # a FailureRecorder tells why trials failed (see on_trial_error)
        self._pending_errors: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _LIVE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach(None, None)

    def get_state(self) -> dict[str, Any]:
        return {
            "configs": self.configs,
            "last": self.last,
            "measured": self.measured,
            "finished": self.finished,
            "ran": self.ran,
            "rung_values": self.rung_values,
            "failures": self.failures,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.rung_values = dict(state.get("rung_values", {}))
        self.failures = {k: list(v) for k, v in state.get("failures", {}).items()}
        self.configs = dict(state["configs"])
        self.last = dict(state["last"])
        self.measured = dict(state.get("measured", {}))
        self.finished = set(state["finished"])
        self.ran = int(state["ran"])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.get_state(), fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.set_state(pickle.load(fh))

    # -- what the searcher works on, opened lazily ---------------------------------------------
    @property
    def opts(self) -> SearchOptions:
        if self._opts is None:
            self._opts = SearchOptions.from_mapping(self.options, source="the Ray searcher")
        return self._opts

    @property
    def search_space(self):
        if self._space is None:
            from fcasearch.space import load_space

            self._space = load_space(self.space, source=f"{self.run_root}/run.yaml (space)")
        return self._space

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = open_study(
                self.opts, self.storage, self.study_name, space=self.search_space
            )
        return self._study

    @property
    def pruner(self) -> Any:
        """The run's :class:`~fcasearch.search.schedulers.RungPruner` (rungs and what they rank
        by), or None without a scheduler."""
        from fcasearch.search.schedulers import RungPruner
        from fcasearch.search.study import make_pruner

        if "_pruner" not in self.__dict__:  # the study's (its run's definition), else made once
            pruner = self.study.pruner
            if not isinstance(pruner, RungPruner):
                pruner = make_pruner(self.opts, self.search_space)
            self._pruner = pruner if isinstance(pruner, RungPruner) else None
        return self._pruner

    @property
    def log(self) -> TrialLog:
        if self._log is None:
            self._log = TrialLog(RunDir(Path(self.run_root)))
        return self._log

    @property
    def cache(self) -> dict[str, dict[str, Any]]:
        if self._cache is None:
            self._cache = self.log.completed(self.opts.budget)
        return self._cache

    # -- Tune's hooks --------------------------------------------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space is the run's, not Tune's param_space

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.data_fault:
            return Searcher.FINISHED
        study = self.study
        if self.n_trials is not None and counted_trials(study) >= self.n_trials:
            return Searcher.FINISHED
        trial = study.ask()
        if not claim_slot(study, trial, self.n_trials):
            return Searcher.FINISHED
        cfg = trial_config(
            trial,
            self.search_space,
            self.cache,
            self.log.run.name,
            run_dir=str(Path(self.run_root).resolve()),
            run_id=self.log.run.owner_id,
            budget=self.opts.budget,
            study=study if self.shared else None,
            runtime=self.opts.study_label(),
        )
        self._trials[trial_id] = trial
        self.configs[trial_id] = cfg
        if self._progress is not None:
            self._progress.start_trial(trial.number, ArchSpec.from_json(cfg["spec"]))
        return cfg

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        keep = ("epoch", "threads", "ray_node", "cuda_visible_devices")
        self.last[trial_id] = {k: v for k, v in result.items() if k in METRICS or k in keep}
        measured = result.get("row_if_stopped") or result.get("row_so_far")
        if measured:  # the row a failure of the trial is logged with (see _complete)
            self.measured[trial_id] = measured
        self._note_rung(trial_id, result)

    def _note_rung(self, trial_id: str, result: dict[str, Any]) -> None:
        """Keep the trial's values at a rung, for the study (a resumed run's scheduler)."""
        pruner = self.pruner
        rung = None if pruner is None else pruner.schedule.rung_at(result.get("epoch", 0.5))
        if rung is not None:
            self.rung_values.setdefault(trial_id, {})[str(rung)] = pruner.vector(result)

    # -- failures (told by FailureRecorder, a Tune callback of the same driver) ---------------
    def note_failure(self, trial_id: str, reason: str) -> None:
        """An attempt of the trial was lost (its worker or node died) and Tune retries it."""
        self.failures.setdefault(trial_id, []).append(reason)

    def trial_failed(self, trial_id: str, reason: str) -> None:
        """The trial failed for good (no retry left): its row says ``reason``."""
        self._pending_errors.discard(trial_id)
        self._complete(trial_id, None, True, reason)

    def flush_failed(self) -> None:
        """Rows for failed trials whose reason never came (Tune ended first)."""
        for trial_id in sorted(self._pending_errors):
            self.trial_failed(trial_id, "")

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if error and self._errors_told and trial_id not in self.finished:
            # Tune tells the searcher before its callbacks, which see the error: the row waits
            # for FailureRecorder.on_trial_error, a moment later in the same step
            self._pending_errors.add(trial_id)
            return
        self._complete(trial_id, result, error, "")

    def _complete(
        self, trial_id: str, result: dict[str, Any] | None, error: bool, reason: str
    ) -> None:
        if trial_id in self.finished or trial_id not in self.configs:
            return
        self.finished.add(trial_id)
        o = self.opts
        cfg = self.configs[trial_id]
        spec = ArchSpec.from_json(cfg["spec"])
        number = int(cfg["trial_number"])
        # a trial the scheduler stopped ends on the result it was stopped at (Tune does not
        # pass that one to on_trial_result)
        stopped_on = bool(result) and "epoch" in result and not error and not result.get("row")
        if stopped_on:
            self._note_rung(trial_id, result)
        measured = self.measured.pop(trial_id, None)
        if result and result.get("row"):
            row = json.loads(result["row"])
        elif stopped_on and result.get("row_if_stopped"):
            # the row the worker built at this rung: what was measured (the median latency,
            # its stability, attempts, notes), as the local executor's row of a stopped trial
            row = json.loads(result["row_if_stopped"])
        elif error and measured:
            # failed for good after an epoch: what was measured, not the penalized costs
            row = row_for_failed(json.loads(measured), reason)
            if "weights" in json.loads(row["notes"]):  # saved at a rung by this trial
                self.log.run.weights_file(spec.arch_id).unlink(missing_ok=True)
        else:
            last = result if stopped_on else (self.last.get(trial_id) or result)
            rung = rung_reached(o, float((last or {}).get("epoch", 0)))
            row = row_for_stopped(
                spec, number, self.log.run.name, last, error, o.budget, rung, reason, o.scheduler
            )
        lost = self.failures.get(trial_id, [])
        row["failures"] = len(lost)  # attempts lost to a dead worker or node, then retried
        if lost:
            notes = json.loads(row.get("notes") or "{}")
            notes["failures"] = " | ".join(lost)
            row["notes"] = json.dumps(notes, sort_keys=True)
        self.log.append(row)  # durable first: a kill after this line loses nothing
        reason = str(row.get("reason") or "")
        self.data_fault = self.data_fault or data_fault(
            number, str(row.get("status")), reason, self.log.run.root
        )
        if stopped_on:  # Tune ended it between epochs: its checkpoint serves no retry
            checkpoint_path(self.log.run.checkpoints, spec.arch_id, o).unlink(missing_ok=True)
        res = result_from_row(row, spec)
        reused = bool(cfg.get("reuse"))
        share = shared_metrics(row) if self.shared and not reused else None
        trial = self._trials.pop(trial_id, None)
        if trial is not None:
            if self.rung_values.get(trial_id):
                trial.set_user_attr(RUNG_VALUES_ATTR, self.rung_values[trial_id])
            tell(self.study, trial, res, o.objectives, self.search_space.constraints, shared=share)
        else:  # a trial Tune restored from an earlier driver: told by its number
            state = {"failed": optuna.trial.TrialState.FAIL}.get(res.status)
            if res.status in ("pruned", "infeasible"):  # never COMPLETE (see study.tell)
                state = optuna.trial.TrialState.PRUNED
            values = None if state else values_for(o.objectives, res.metrics)
            self.study.tell(number, values, state=state, skip_if_finished=True)
        if res.status == "complete" and not reused:
            self.cache.setdefault(spec.arch_id, row)
        if self._progress is not None:
            self._progress.finish_trial(row)
        self.log.export_every(o.objective_pairs)
        self.ran += 1


_NOISE = ("actor_id:", "namespace:", "class_name:", "pid:", "ip:", "Traceback", "File ", "raise ")


def error_summary(trial) -> str:
    """One line on why a Tune trial's last attempt failed: the error's type and its message
    without ids and traceback lines (Tune keeps the whole text in the trial's error file)."""
    exc, text = None, ""
    for path in (trial.pickled_error_file, trial.error_file):  # in the driver, as Tune wrote them
        if path and Path(path).exists():
            if path == trial.pickled_error_file:
                try:
                    with open(path, "rb") as fh:
                        exc = pickle.load(fh)
                except Exception:  # an error that does not unpickle: its text will do
                    exc = None
            else:
                text = Path(path).read_text(errors="replace")
    blocks = text.split("Failure # ")  # the file holds every failure of the trial: the last
    text = blocks[-1].split("\n", 1)[-1] if len(blocks) > 1 else (str(exc) if exc else text)
    lines = [ln.strip() for ln in text.splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith(_NOISE) and not ln.startswith("^")]
    head = f"{type(exc).__name__}: " if exc is not None else ""
    return (head + " ".join(kept))[:600] or "the Ray trial failed (no error text)"


class FailureRecorder(Callback):
    """Tune callback that records why trials fail, in the driver, for the searcher's rows: an
    attempt lost and retried (``FailureConfig.max_failures``) is noted on the trial's row
    (``failures``, and the reasons in ``notes``); a trial that fails for good gets its row with
    the reason (a worker killed from outside, a node that died with no retry left)."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher
        searcher._errors_told = True

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.searcher.note_failure(trial.trial_id, error_summary(trial))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.searcher.trial_failed(trial.trial_id, error_summary(trial))
