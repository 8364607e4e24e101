"""What a run checks and writes as it starts or resumes, before its first trial: the checks that
refuse a run up front, its folder, ``run.yaml`` (written once, with the totals a resume changes
kept up to date), and the line that says what data it trains on."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fcasearch.search.options import SearchError, SearchOptions, check_memory_measured
from fcasearch.storage.records import RunDir

if TYPE_CHECKING:  # imported where used: it brings torch, which the CLI's checks do not need
    from fcasearch.search.objective import TrialContext

__all__ = [
    "check_data",
    "check_measured_constraints",
    "check_memory_constraint",
    "check_runtime",
    "check_same_data",
    "data_line",
    "folder_kept_only_if_started",
    "git_revision",
    "record_resumed",
    "runtime_version",
    "versions",
    "write_run_yaml",
]


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("fcasearch", "torch", "torchvision", "optuna", "ray", "fvcore", "pandas", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if rev.returncode:
            return "unknown (not a git checkout)"
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def write_run_yaml(
    run: RunDir,
    options: SearchOptions,
    space_dict: dict[str, Any],
    fingerprint: dict,
    fp_id: str,
    hypervolume: dict[str, Any] | None = None,
    study_name: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    from fcasearch.runtime import format_runtime_options

    doc = {
        "name": run.name,
        "study_name": study_name or run.name,  # what --resume opens, wherever the folder goes
        "run_id": uuid.uuid4().hex,  # marks its trials in a shared study, wherever it goes
        "objectives": [{"name": o.name, "direction": o.direction} for o in options.objectives],
        "sampler": options.sampler_name,
        "seed": options.seed,
        "device": options.device,
        "runtime": options.runtime,
        "runtime_version": runtime_version(options.runtime),
        "runtime_options": format_runtime_options(options.runtime_kwargs),
        "executor": options.executor,
        "budget": options.budget,
        "data": data,  # what accuracy counts: val_images, one image is 1/val_images of it
        "fingerprint": json.loads(json.dumps(fingerprint, default=str)),  # plain types only
        "fingerprint_id": fp_id,
        "hypervolume": hypervolume,
        "options": options.to_dict(),
        "space": space_dict,
        "versions": versions(),
        "git_revision": git_revision(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    run.store_run_yaml(doc)


def runtime_version(name: str) -> str:
    from fcasearch.runtime import get_runtime

    try:
        return get_runtime(name).version
    except Exception as exc:  # e.g. not installed on this driver (a remote cluster's runtime)
        return f"unknown here ({type(exc).__name__})"


def check_runtime(options: SearchOptions, device: str) -> None:
    """SearchError (one line, what to install) if the run's runtime cannot run on ``device``."""
    from fcasearch.runtime import RuntimeUnavailable, get_runtime

    try:
        get_runtime(options.runtime, **options.runtime_kwargs).check(device)
    except RuntimeUnavailable as exc:
        raise SearchError(f"runtime: {exc}") from None


def check_memory_constraint(options: SearchOptions, space: Any) -> None:
    """SearchError if the space limits peak inference memory but the run's runtime does not
    measure it: every trial would be infeasible (``peak_mem_mb was not measured``)."""
    limit = space.constraints.max_memory_mb
    if limit is not None:
        check_memory_measured(
            options.runtime,
            f"space constraint max_memory_mb {limit:g}",
            "be infeasible",
            "max_memory_mb from the space's constraints",
        )


@contextlib.contextmanager
def folder_kept_only_if_started(run: RunDir) -> Iterator[None]:
    """Create the run's folder; if it was new and the start fails before ``run.yaml`` is written
    (a storage that cannot be opened, a study name taken), remove it again: the failed start
    leaves nothing (a later run into it would work, but an empty folder looks like a run)."""
    fresh = not run.root.exists()
    run.root.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if fresh and not run.run_yaml.exists():
            shutil.rmtree(run.root, ignore_errors=True)
        raise


# what a resume may change that a later plain --resume (after a kill) must go on with
KEPT_ON_RESUME = ("n_trials", "time_budget", "data_root")


def record_resumed(run: RunDir, options: SearchOptions) -> None:
    """Keep a resumed run's ``n_trials``, ``time_budget`` and ``data_root`` in its run.yaml:
    ``--n-trials`` is the run's total and ``--data-root`` where its data lies now, so a later
    plain ``--resume`` goes on to the total it was last given, from the data where it is."""
    doc = yaml.safe_load(run.run_yaml.read_text(encoding="utf-8"))
    stored = doc.get("options") or {}
    kept = {k: getattr(options, k) for k in KEPT_ON_RESUME}
    if all(stored.get(k) == v for k, v in kept.items()):
        return
    doc["options"] = {**stored, **kept}
    run.store_run_yaml(doc)


def check_data(ctx: TrialContext) -> dict[str, Any] | None:
    """Load the data once per input size of the space and check the space's models fit it.

    Returns:
        What the trials train and validate on, for run.yaml (``name``, ``classes``,
        ``train_images``, ``val_images``: every accuracy is a count of the latter); None when
        nothing reads data.

    Raises:
        ValueError: the dataset cannot be loaded, or its channels/classes differ from the space's.
    """
    from fcasearch.search.dry import dry_budget
    from fcasearch.search.options import PROXY_PREFIX

    o = ctx.options
    if not (o.trains or any(ob.name.startswith(PROXY_PREFIX) for ob in o.objectives)):
        return None
    if dry_budget(o.budget) is not None:
        return None  # a dry run reads no data
    data = None
    for side in ctx.space.img_sizes:
        data = ctx.data_for((side, side))
        if (ctx.space.in_chans, ctx.space.num_classes) != (data.in_chans, data.num_classes):
            raise ValueError(
                f"the space builds models for {ctx.space.in_chans} channel(s) and "
                f"{ctx.space.num_classes} classes, but dataset {data.name!r} has {data.in_chans} "
                f"and {data.num_classes}; set in_chans/num_classes in the space YAML to match the data"
            )
    if data is None:
        return None
    return {
        "name": data.name,
        "classes": data.num_classes,
        "train_images": len(data.train),
        "val_images": len(data.val),
    }


def check_same_data(run: RunDir, data: dict[str, Any] | None) -> None:
    """SearchError if a resumed run's data is not what its run.yaml recorded (name, classes,
    train and validation images): a --data-root moved to another tree would mix two datasets in
    one run's accuracies. A run that recorded none is not checked."""
    doc = yaml.safe_load(run.run_yaml.read_text(encoding="utf-8")) or {}
    recorded = doc.get("data")
    if not isinstance(recorded, dict) or data is None:
        return
    keys = ("name", "classes", "train_images", "val_images")
    differ = [k for k in keys if k in recorded and recorded[k] != data.get(k)]
    if differ:
        was = ", ".join(f"{k} {recorded[k]}" for k in differ)
        now = ", ".join(f"{k} {data.get(k)}" for k in differ)
        raise SearchError(
            f"--resume {run.root}: the data found now ({now}) is not the run's (run.yaml data: "
            f"{was}), so its trials would mix datasets; point --data-root at the run's data, "
            "or start a new run (another --out) on this one"
        )


def data_line(data: dict[str, Any], options: SearchOptions) -> str:
    """The run's data in one line: ``digits: 1438 train / 359 val images, 10 classes``."""
    subset = [
        f"first {options.subset_classes} classes" if options.subset_classes else "",
        f"{options.subset_fraction:g} of each class" if options.subset_fraction else "",
    ]
    chosen = ", ".join(s for s in subset if s)
    return (
        f"{data['name']}: {data['train_images']} train / {data['val_images']} val images, "
        f"{data['classes']} classes" + (f" ({chosen})" if chosen else "")
    )


def check_measured_constraints(options: SearchOptions, space: Any) -> None:
    """SearchError if the space limits latency or memory for another device or batch size than
    the run measures on (``constraints.device``, ``constraints.latency_batch_size``): its limits
    would be applied to figures of another setting."""
    c = space.constraints
    if not c.has_measured:
        return
    wanted, run = c.device.split(":"), options.device.split(":")
    device_differs = wanted[0] != run[0] or (len(wanted) > 1 and len(run) > 1 and wanted != run)
    limits = ", ".join(
        f"{name} {getattr(c, name):g}"
        for name in ("max_latency_ms", "max_memory_mb")
        if getattr(c, name) is not None
    )
    batch_differs = c.max_latency_ms is not None and (
        c.latency_batch_size != options.latency_batch_size
    )
    if device_differs or batch_differs:
        raise SearchError(
            f"space constraints: the limits {limits} are meant for {c.device} at batch "
            f"{c.latency_batch_size} (constraints.device, constraints.latency_batch_size), but "
            f"this run measures on {options.device} at batch {options.latency_batch_size}; run "
            f"with --device {c.device} --latency-batch-size {c.latency_batch_size}, or set the "
            "space's constraints to the device and batch size the limits are for"
        )
