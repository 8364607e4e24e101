"""A whole search: the results directory, the study, an executor, the exports."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from fcasearch.search.options import SearchError, SearchOptions
from fcasearch.search.start import (
    check_data,
    check_measured_constraints,
    check_memory_constraint,
    check_runtime,
    check_same_data,
    data_line,
    folder_kept_only_if_started,
    record_resumed,
    write_run_yaml,
)
from fcasearch.storage.records import RunDir, TrialLog

__all__ = ["SearchOutcome", "earlier_threads", "load_run_options", "run_search"]


@dataclass
class SearchOutcome:
    """Where a finished (or stopped) search left its results, with counts by status."""

    run: RunDir
    counts: dict[str, int]
    pareto_size: int
    trials_ran: int
    recovered: int
    final: dict[str, Any] | None = None  # the final re-measurement (final.json), if made


def default_out(options: SearchOptions) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{Path(options.space).stem}-{stamp}"


def load_run_options(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options, space dict) stored in a run's ``run.yaml`` (for ``--resume``)."""
    path = RunDir(Path(run_dir)).run_yaml
    if not path.exists():
        raise SearchError(
            f"--resume: {path} not found; {run_dir} holds no run to resume (start it without --resume)"
        )
    data = yaml.safe_load(path.read_text())
    return dict(data["options"]), data["space"]


def earlier_threads(run_dir: str | Path, stored: dict[str, Any]) -> int | None:
    """The CPU thread count a run's trials were measured with, for a resumed run whose options
    (``stored``, from run.yaml) leave ``threads`` to the executor: a Ray trial uses
    ``cpus_per_trial`` threads, a local one torch's default on the driver, so resuming on the
    other executor (or with other ``--cpus-per-trial``) would measure with another count and mix
    it into the run's latencies.

    The ``threads`` of the run's first logged row that has one; without rows, what the first
    run's executor gave (``cpus_per_trial`` on Ray, else the driver's, from run.yaml's
    fingerprint); None if nothing says.
    """
    if stored.get("threads") is not None:
        return int(stored["threads"])
    run = RunDir(Path(run_dir))
    for row in TrialLog(run).rows():
        value = row.get("threads")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
            return int(value)
    if stored.get("executor") == "ray":
        return max(1, int(float(stored.get("cpus_per_trial") or 1)))
    doc = yaml.safe_load(run.run_yaml.read_text()) if run.run_yaml.exists() else None
    value = ((doc or {}).get("fingerprint") or {}).get("threads")
    return int(value) if isinstance(value, int) and value >= 1 else None


def _hypervolume(run: RunDir, options: SearchOptions, space: Any, resume: bool) -> Any:
    """The run's hypervolume definition: the one run.yaml stores, else defined now (before the
    first trial) from the space and ``options.hv_reference`` (``fcasearch.pareto``)."""
    from fcasearch.pareto import HypervolumeDefinition, HypervolumeError
    from fcasearch.space.bounds import space_hypervolume

    try:
        if resume and run.run_yaml.exists():
            stored = (yaml.safe_load(run.run_yaml.read_text()) or {}).get("hypervolume")
            if stored:
                return HypervolumeDefinition.from_dict(stored, source=f"{run.run_yaml} hypervolume")
        return space_hypervolume(
            space, options.objective_pairs, dict(options.hv_reference), given_source="hv_reference"
        )
    except HypervolumeError as exc:
        raise SearchError(str(exc)) from None


def run_search(
    options: SearchOptions,
    *,
    resume: bool = False,
    space_dict: dict[str, Any] | None = None,
    rebuild_study: bool = False,
) -> SearchOutcome:
    """Run (or resume) a search and export its results.

    Args:
        options: resolved options; ``options.out`` is the results directory.
        resume: continue the run in ``options.out`` (its trials are kept; trials a killed run
            left RUNNING are marked failed and retried).
        space_dict: the space as stored in run.yaml (resume); otherwise ``options.space`` is read.
        rebuild_study: (with ``resume``) rebuild the run's ``study.db`` from ``trials.jsonl``
            first, for a study that was lost or corrupted.
    """
    from fcasearch.measure import fingerprint_id, hardware_fingerprint
    from fcasearch.search.objective import TrialContext
    from fcasearch.search.progress import SearchProgress
    from fcasearch.search.study import counted_trials, recover_interrupted
    from fcasearch.space import load_space

    run = RunDir(Path(options.out) if options.out else default_out(options))
    options = dataclasses.replace(options, out=str(run.root))
    if options.data_root:  # recorded absolute: a resume from another folder finds it
        root = Path(options.data_root).expanduser().resolve()
        options = dataclasses.replace(options, data_root=str(root))
    if run.run_yaml.exists() and not resume:
        raise SearchError(
            f"{run.root} already holds a run; pass --resume to continue it, or choose another --out"
        )
    if space_dict is None:
        space = load_space(options.space)  # a path, or the name of a shipped space
        space_dict = space.to_dict()
    else:
        space = load_space(space_dict, source=f"{run.run_yaml} (space)")
    check_memory_constraint(options, space)
    check_measured_constraints(options, space)
    if options.executor == "ray":
        from fcasearch.search.ray_env import check_address, check_ray_tune

        check_ray_tune()  # before anything is written
        if options.address is not None:
            check_address(options.address)  # a bounded wait, one line
    # On a Ray cluster the trials run (and are fingerprinted) on its workers: this driver's
    # machine, often a head node without a GPU, needs none.
    remote = options.executor == "ray" and options.address is not None
    driver_device = "cpu" if remote else options.device
    if driver_device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SearchError(
                "device: cuda was asked but torch sees no CUDA device here; use --device cpu "
                "(or --executor ray --address HOST:PORT to train on a cluster's GPUs)"
            )
    if options.measure and not remote:
        check_runtime(options, options.device)  # before anything is written
    hv = _hypervolume(run, options, space, resume)  # fixed before the first trial
    from fcasearch.search.devicelock import lock_for
    from fcasearch.search.final import SearchMeasurements, run_job

    ctx = TrialContext(
        options=options, space=space, checkpoint_dir=run.checkpoints, lock=lock_for(options.device)
    )
    try:
        data = check_data(ctx)  # once, before any trial: a wrong dataset is the run's error
    except ValueError as exc:
        raise SearchError(f"data: {exc}") from None
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)  # training and measurement in this process
    with folder_kept_only_if_started(run):  # a start that stops here leaves no empty --out
        fp = hardware_fingerprint(driver_device, threads=options.threads)
        log = TrialLog(run)
        storage = options.storage or run.storage_url()
        study_name, named_by = _study_name(options, run, resume)
        if rebuild_study:
            if not resume or options.storage:
                raise SearchError(
                    "--rebuild-study rebuilds a run's own study.db from its trials.jsonl: use it with "
                    "--resume RUN_DIR, on a run without --storage"
                )
            from fcasearch.search.rebuild import rebuild_study as rebuild

            rebuild(run, options, space, study_name)
        study = _open_run_study(
            options, storage, (study_name, named_by), space, run, log, resume, hv
        )
        if options.storage is not None:
            _check_study_runtime(study, study_name, options.study_label())
        if not resume:  # once the study opened: a storage error leaves no run to --resume
            write_run_yaml(
                run, options, space_dict, fp, fingerprint_id(fp), hv.to_dict(), study_name, data
            )
    logged = {int(r["trial"]): r for r in log.rows() if "trial" in r}
    owner = run.owner_id if options.storage else None  # a study others may share
    recovered = recover_interrupted(study, owner, logged, options.objectives, space.constraints)
    if options.sampler_name == "grid" and not resume and not study.get_trials(deepcopy=False):
        _enqueue_grid(study, space, options.n_trials)  # once per study, by its first driver
    deadline = None if options.time_budget is None else time.monotonic() + options.time_budget
    done = counted_trials(study)
    n_left = None if options.n_trials is None else max(0, options.n_trials - done)
    if resume and n_left == 0 and options.time_budget is not None:
        # the trial cap ends the run before the budget starts: nothing would run
        raise SearchError(
            f"--resume {run.root}: the run already holds {done} trials, its total n_trials "
            f"{options.n_trials} (run.yaml's, or --n-trials) or more, so --time-budget runs none; "
            f"to run more, give --n-trials a new total above {done} (e.g. --n-trials "
            f"{done + options.n_trials}) with the time budget"
        )
    if resume:
        check_same_data(run, data)
        record_resumed(run, options)
    if data is not None:  # what every accuracy of the run is a count of
        print(f"data: {data_line(data, options)}", file=sys.stderr)
    progress = SearchProgress(
        n_left, options.objectives, log.rows(), enabled=options.progress, hypervolume=hv
    )
    extra = SearchMeasurements(ctx, run)  # references before the trials, final rounds after
    try:
        if options.executor == "ray":
            from fcasearch.search.ray_executor import run_ray

            ran = run_ray(
                study,
                ctx,
                log,
                options.n_trials,
                deadline,
                progress,
                storage=storage,
                study_name=study_name,
                measurements=extra,
            )
        else:
            from fcasearch.search.local import run_local

            here = lambda job, payload: run_job(job, ctx, payload)  # noqa: E731
            extra.before(here)
            shared = options.storage is not None
            ran = run_local(study, ctx, log, options.n_trials, deadline, progress, shared=shared)
            progress.close()
            extra.after(here, log.export(options.objective_pairs))
    finally:
        progress.close()
        front = log.export(options.objective_pairs)
    counts = progress.counts()
    return SearchOutcome(
        run=run,
        counts=counts,
        pareto_size=len(front),
        trials_ran=ran,
        recovered=recovered,
        final=extra.final,
    )


def _check_study_runtime(study, study_name: str, label: str) -> None:
    """SearchError if other drivers of a shared study measure latency on another runtime, the
    same one with other options, or at other settings (``label``:
    :meth:`SearchOptions.study_label`): its objective values would mix them. Trials of a version
    that recorded the runtime alone are compared by the runtime."""
    recorded = {
        str(t.user_attrs["runtime"])
        for t in study.get_trials(deepcopy=False)
        if "runtime" in t.user_attrs
    }
    runtime = label.split(" at ")[0]
    others = sorted(r for r in recorded if r != label and (" at " in r or r != runtime))
    if others:
        raise SearchError(
            f"study {study_name!r}: its trials measure latency on {'; '.join(others)}, this "
            f"driver on {label}; the study's objectives would mix them. Use the same --runtime, "
            "--runtime-option, --latency-batch-size, --latency-dtype, --latency-cuda-graph and "
            "--threads (on Ray: --cpus-per-trial) as its other drivers, or another --study-name"
        )


def _study_name(options: SearchOptions, run: RunDir, resume: bool) -> tuple[str, str]:
    """The run's study name, and what chose it (for messages).

    A new run's study is ``--study-name``, else the run's name (its folder's). A resumed run's is
    the one it recorded: ``--study-name`` as run.yaml's options keep it, else run.yaml's
    ``study_name`` (``name`` for a run written before that key), never the name of the folder
    it now lies in: a run moved, copied or renamed keeps its study.
    """
    if options.study_name:
        return options.study_name, "run.yaml options.study_name" if resume else "--study-name"
    if not resume:
        return run.name, "the run's folder name (no --study-name)"
    for key in ("study_name", "name"):
        if key in run.recorded:
            return run.recorded[key], f"run.yaml {key}"
    return run.root.name, "the run's folder name (run.yaml records none)"


def _stored_trials(storage: str, study_name: str) -> int | None:
    """How many trials study ``study_name`` holds in ``storage``; None when there is no such
    study. Reads only: nothing is created in the storage.

    Raises:
        StorageError: the storage cannot be opened or read.
    """
    import optuna
    import sqlalchemy.exc

    from fcasearch.search.storages import make_storage, read_error

    backend = make_storage(storage)
    try:
        study = optuna.load_study(
            study_name=study_name, storage=backend, sampler=optuna.samplers.RandomSampler()
        )
        return len(study.get_trials(deepcopy=False))
    except KeyError:  # Optuna's answer for a study the storage does not hold
        return None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        raise read_error(storage, study_name, exc) from None


def _held_studies(storage: str) -> str:
    """The studies ``storage`` holds, for a message (read only)."""
    import optuna

    from fcasearch.search.storages import make_storage

    try:
        names = optuna.get_all_study_names(storage=make_storage(storage))
    except Exception as exc:  # only a message's detail: the error it goes into stands anyway
        return f"its studies cannot be listed ({type(exc).__name__})"
    if not names:
        return "it holds no study"
    shown = ", ".join(repr(n) for n in names[:5]) + (
        f" and {len(names) - 5} more" if len(names) > 5 else ""
    )
    return f"it holds {shown}"


def _open_run_study(options, storage, naming, space, run, log, resume, hypervolume=None):
    """The run's study, once it is known to be the right one. Checked before anything is written
    to the storage (nothing is created by a start or resume that stops here):

    * ``--resume`` of a run with finished trials: its study (by the name the run recorded,
      ``naming`` = (name, what chose it)) must be in the storage and hold trials; a run whose own
      study.db is lost, overwritten or corrupt gets a one-line error that offers
      ``--rebuild-study``;
    * a new run on a shared ``--storage`` whose study name is only its folder's name must not
      find a study of that name there (another run's): sharing a study takes ``--study-name``.
    """
    import optuna

    from fcasearch.search.storages import StorageError, redact
    from fcasearch.search.study import open_study

    study_name, named_by = naming
    own = options.storage is None
    logged = len(log.rows()) if resume else 0
    offer = (
        f"its trials.jsonl holds {logged} finished trial(s): rebuild the study from it with "
        f"--resume {run.root} --rebuild-study"
    )
    where = run.study_db if own else f"storage {redact(storage)}"
    if own and logged and not run.study_db.exists():
        raise SearchError(f"--resume: {run.study_db} is missing; {offer}")
    if logged:
        try:
            held = _stored_trials(storage, study_name)
        except StorageError as exc:
            if own:
                raise SearchError(
                    f"--resume: {run.study_db} cannot be read ({exc}); {offer}"
                ) from None
            raise
        if held is None and own:
            raise SearchError(
                f"--resume: {run.study_db} holds no study {study_name!r} (the run's study, from "
                f"{named_by}; {_held_studies(storage)}), so it is not this run's study.db "
                "(overwritten?). Put the run's own study.db back, or rebuild the study from its "
                f"trials.jsonl ({logged} finished trial(s)) with --resume {run.root} "
                "--rebuild-study (which keeps this file as study.db.broken-*)"
            )
        if held is None:
            raise SearchError(
                f"--resume: {where} holds no study {study_name!r} (the run's study, from "
                f"{named_by}; {_held_studies(storage)}), though the run's trials.jsonl holds "
                f"{logged} finished trial(s) of it: the study was deleted, or that URL now names "
                "another database. Restore the study there (the run's --storage, as run.yaml "
                "keeps it), or start a new run (another --out)"
            )
        if not held and own:
            raise SearchError(
                f"--resume: {run.study_db} holds no trial of study {study_name!r} (overwritten?); "
                f"{offer}"
            )
        if not held:
            raise SearchError(
                f"--resume: study {study_name!r} in {where} holds no trial, though the run's "
                f"trials.jsonl holds {logged} finished trial(s) of it (deleted and created "
                "again?); start a new run (another --out)"
            )
    # a new run whose study is named only after its folder must create it, not join another's
    folder_named = not (resume or own or options.study_name)
    taken = SearchError(
        f"{where} already holds a study {study_name!r}, another run's (a study is named after "
        f"its run's folder unless --study-name says otherwise): give this run its own "
        f"--study-name (or another --out folder name), or join that study on purpose with "
        f"--study-name {study_name}"
    )
    if folder_named and _stored_trials(storage, study_name) is not None:
        raise taken
    try:
        return open_study(
            options,
            storage,
            study_name,
            space=space,
            hypervolume=hypervolume,
            create_only=folder_named,  # another run may create it between the check and here
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise taken from None
    except StorageError as exc:
        if own and logged:
            raise SearchError(f"--resume: {run.study_db} cannot be read ({exc}); {offer}") from None
        raise


def _enqueue_grid(study, space, n_trials: int | None) -> None:
    """Enqueue every architecture of a (small) space, in enumeration order."""
    for i, spec in enumerate(space.enumerate()):
        if n_trials is not None and i >= n_trials:
            break
        study.enqueue_trial(space.to_params(spec))
