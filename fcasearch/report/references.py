"""Reference models drawn on cost axes: the paper's FcaFormers and profiled baselines.

Their accuracy is ImageNet top-1, not comparable with a search's proxy accuracy, so the report
marks them as vertical lines at their cost only. Params and MACs of the paper models come from
the model registry and the closed-form counters (computed at the run's input size and class
count); latency and memory come only from a ``fcasearch profile`` CSV measured on the same
hardware fingerprint as the runs. Everything degrades to a note when a piece is unavailable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fcasearch.metrics import settings_text
from fcasearch.report.final import measured_threads, run_references, runtime_label
from fcasearch.report.info import RunData

__all__ = [
    "PAPER_TOP1",
    "merge_references",
    "paper_references",
    "profile_references",
    "read_profile",
    "report_references",
    "run_input_shape",
]

# ImageNet-1k top-1 claimed in the paper (fcaformer-spec.md), for the marker labels only
PAPER_TOP1 = {
    "fcaformer_l1": 0.803,
    "fcaformer_l2": 0.831,
    "fcaformer_l3": 0.842,
    "fcaformer_l4": 0.849,
}
REFERENCE_COLUMNS = ["model", "kind", "label", "params", "macs", "latency_ms", "peak_mem_mb"]


def _find_key(obj: Any, key: str) -> Any:
    """First value under ``key`` anywhere in nested dicts/lists, else None."""
    if isinstance(obj, dict):
        if key in obj and not isinstance(obj[key], dict):
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def run_input_shape(run: RunData) -> tuple[int | tuple[int, int], int, list[str]]:
    """Input side and class count of a run's models, for counting the paper models alike.

    Looks in a complete trial's ``spec`` JSON, then ``arch.img_size``, then ``run.yaml``.

    Args:
        run: A loaded run.

    Returns:
        ``(img_size, num_classes, notes)``: the side (or ``(height, width)``), the classes;
        224 and 1000 (with a note) when not found.
    """
    notes: list[str] = []
    img = classes = None
    specs = run.trials.loc[run.trials["status"] == "complete", "spec"].dropna()
    if len(specs):
        try:
            spec = json.loads(str(specs.iloc[0]))
            img, classes = _find_key(spec, "img_size"), _find_key(spec, "num_classes")
        except ValueError:
            pass
    arch_img = run.trials.get("arch.img_size")
    if img is None and arch_img is not None and arch_img.notna().any():
        img = arch_img.dropna().mode().iloc[0]
    img = img if img is not None else _find_key(run.config, "img_size")
    classes = classes if classes is not None else _find_key(run.config, "num_classes")
    if img is None:
        notes.append("input size of the run unknown: paper models counted at 224")
    if classes is None:
        notes.append("class count of the run unknown: paper models counted with 1000 classes")
    if isinstance(img, str):  # "32" or "32x48"
        img = [int(v) for v in re.findall(r"\d+", img)] or None
    if isinstance(img, list | tuple):
        size: int | tuple[int, int] = (int(img[0]), int(img[-1]))
        size = size[0] if size[0] == size[1] else size
    else:
        size = int(img or 224)
    return size, int(classes or 1000), notes


def _as_number(value: Any) -> float:
    for attr in ("total", "macs", "params"):
        if hasattr(value, attr) and not callable(getattr(value, attr)):
            value = getattr(value, attr)
            break
    if isinstance(value, dict):
        value = value.get("total", np.nan)
    return float(value)


def paper_references(
    img_size: int | tuple[int, int],
    num_classes: int,
    names: Sequence[str] = ("fcaformer_l1", "fcaformer_l2"),
) -> tuple[pd.DataFrame, list[str]]:
    """Params and MACs of the paper models at the run's input size and class count.

    Args:
        img_size: Input side (or ``(height, width)``) of the run's models.
        num_classes: Classes of the run's task.
        names: Registry names to count.

    Returns:
        ``(table, notes)``: columns of ``REFERENCE_COLUMNS``; empty with a note when the model
        registry or the counters cannot be imported or fail.
    """
    try:
        from fcasearch.measure.counting import count_macs, count_params
        from fcasearch.models.registry import get_spec
    except Exception as exc:  # the registry may not exist yet, or fail to import
        return pd.DataFrame(columns=REFERENCE_COLUMNS), [
            f"paper model markers skipped: the model registry or counters are unavailable ({exc})"
        ]
    rows, notes = [], []
    for name in names:
        try:
            spec = get_spec(name, img_size=img_size, num_classes=num_classes)
            params, macs = _as_number(count_params(spec)), _as_number(count_macs(spec))
        except Exception as exc:
            notes.append(f"paper marker {name} skipped: {type(exc).__name__}: {exc}")
            continue
        short = name.replace("fcaformer_", "").upper()
        top1 = PAPER_TOP1.get(name)
        label = f"FcaFormer-{short}" + (f" ({top1:.1%} IN-1k)" if top1 else "")
        rows.append(
            {"model": name, "kind": "paper", "label": label, "params": params, "macs": macs}
        )
    if rows:
        notes.append(
            f"Paper models are counted at img {img_size}, {num_classes} classes; their accuracy is "
            "ImageNet top-1 (not comparable with proxy accuracy), so they are vertical lines."
        )
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS), notes


def profile_references(
    path: str | Path,
    fingerprint_ids: Sequence[str],
    batch_size: int | None = None,
    runtime: str | None = None,
    runtime_options: str = "",
    dtype: str | None = None,
    threads: int | None = None,
    input_size: tuple[tuple[int, int], int] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Reference models from a ``fcasearch profile`` CSV.

    Only rows profiled at the runs' input (``input_size``: image size and classes, where the
    profile records them) are used: MACs and latency grow with the image, params with the
    classes. Of those, params and MACs are used whatever the hardware; latency and memory only
    from rows whose ``fingerprint_id`` is the runs' single fingerprint, measured on the runs'
    runtime at their settings (``batch_size``, ``dtype``, ``threads``, where given: another
    setting is another axis). Without those, the row at the smallest batch in fp32 (else the
    first dtype) is used.

    Args:
        path: The profile CSV, or the JSON written beside it (:func:`read_profile`).
        fingerprint_ids: Fingerprint ids of the runs being reported.
        batch_size: Preferred batch size.
        runtime: The runs' runtime: latency and memory only from profile rows measured on it
            (a profile without a ``runtime`` column predates runtimes: its rows are eager).
        runtime_options: The runs' runtime options as run.yaml records them (``""``: the
            defaults); with ``runtime``, profile rows measured with other options are left out.
        dtype: The runs' latency dtype (``fp32``, ``bf16``, ``fp16``).
        threads: The runs' CPU threads (a profile row without ``threads`` is taken as matching).
        input_size: The runs' ``((height, width), num_classes)``; a profile without
            ``img_size`` (written before fcasearch recorded it) is taken as matching, with a note.

    Returns:
        ``(table, notes)`` with the columns of ``REFERENCE_COLUMNS``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a profile table or has no ``model`` column.
    """
    path = Path(path)
    prof = read_profile(path)
    if "model" not in prof:
        raise ValueError(
            f"{path}: a profile CSV needs a 'model' column, found {list(prof.columns)}"
        )
    notes: list[str] = []
    prof, more = _at_input(prof, input_size, path)
    notes += more
    for col in ("params", "macs", "latency_ms", "peak_mem_mb", "batch_size"):
        prof[col] = pd.to_numeric(prof[col], errors="coerce") if col in prof else np.nan
    prof["fingerprint_id"] = prof.get("fingerprint_id", pd.Series("", index=prof.index)).astype(str)
    if "dtype" not in prof:
        prof["dtype"] = "fp32"
    prof["runtime"] = prof["runtime"].fillna("eager").astype(str) if "runtime" in prof else "eager"
    same_rt = prof["runtime"] == runtime if runtime else pd.Series(True, index=prof.index)
    opts = prof.get("runtime_options", pd.Series("", index=prof.index)).astype(object)
    opts = opts.fillna("").astype(str)
    if runtime:  # and the run's options (none: the runtime's defaults)
        same_rt &= opts == runtime_options
    names = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    prof["dtype"] = prof["dtype"].astype(str).map(lambda d: names.get(d, d))
    prof["threads"] = (
        pd.to_numeric(prof["threads"], errors="coerce") if "threads" in prof else np.nan
    )
    same_at = pd.Series(True, index=prof.index)  # measured at the runs' settings
    if batch_size is not None:
        same_at &= prof["batch_size"] == batch_size
    if dtype:
        same_at &= prof["dtype"] == names.get(dtype, dtype)
    if threads is not None:
        same_at &= prof["threads"].isna() | (prof["threads"] == threads)
    wanted = settings_text(batch_size, names.get(dtype, dtype) if dtype else None, threads)
    wanted = wanted or "unrecorded settings"
    same_hw = set(fingerprint_ids) if len(set(fingerprint_ids)) == 1 else set()
    if len(set(fingerprint_ids)) != 1:
        notes.append(
            "latency/memory markers from the profile omitted: the runs have "
            f"{len(set(fingerprint_ids))} hardware fingerprints, so no single machine to match"
        )
    rows = []
    for model, group in prof.groupby("model", sort=False):
        # preferred row first: the asked batch size (else the smallest), fp32 before others
        distance = (group["batch_size"] - batch_size).abs() if batch_size else group["batch_size"]
        g = group.assign(_bs=distance, _fp=group["dtype"] != "fp32")
        g = g.sort_values(["_bs", "_fp"], kind="stable")
        counted = g[g["params"].notna() | g["macs"].notna()]
        row = counted.iloc[0] if len(counted) else g.iloc[0]
        # rows that ran out of memory or failed carry no latency: skip them
        on_hw_rt = g["fingerprint_id"].isin(same_hw) & g["latency_ms"].notna() & same_rt[g.index]
        local = g[on_hw_rt & same_at[g.index]]
        entry = {
            "model": str(model),
            "kind": "paper" if str(model).startswith("fcaformer") else "baseline",
            "label": f"{model} (profiled)",
            "params": row["params"],
            "macs": row["macs"],
            "latency_ms": np.nan,
            "peak_mem_mb": np.nan,
        }
        if len(local):
            lrow = local.iloc[0]
            entry["latency_ms"], entry["peak_mem_mb"] = lrow["latency_ms"], lrow["peak_mem_mb"]
            entry["label"] = (
                f"{model} (bs {int(lrow['batch_size']) if pd.notna(lrow['batch_size']) else '?'}, "
                f"{lrow['dtype']})"
            )
        elif on_hw_rt.any():
            found = sorted(
                {
                    settings_text(
                        int(r["batch_size"]) if pd.notna(r["batch_size"]) else None,
                        r["dtype"],
                        int(r["threads"]) if pd.notna(r["threads"]) else None,
                    )
                    for _, r in g[on_hw_rt].iterrows()
                }
            )
            notes.append(
                f"latency/memory marker of {model} omitted: profiled at {'; '.join(found)}, the "
                f"runs measured at {wanted} (settings are never mixed on one axis: profile it "
                "with the runs' --batch-sizes, --dtypes and --threads)"
            )
        elif runtime and not same_rt[group.index].any():
            profiled = {runtime_label(r, o) for r, o in zip(group["runtime"], opts[group.index])}
            notes.append(
                f"latency/memory marker of {model} omitted: profiled on runtime(s) "
                f"{', '.join(sorted(profiled))}, the runs on "
                f"{runtime_label(runtime, runtime_options)} (runtimes are never mixed on one axis)"
            )
        elif same_hw and group["fingerprint_id"].isin(same_hw).any():
            notes.append(
                f"latency/memory marker of {model} omitted: no successful measurement in the "
                "profile on the runs' hardware (out of memory or failed)"
            )
        elif same_hw:
            other = sorted(set(group["fingerprint_id"]))
            notes.append(
                f"latency/memory marker of {model} omitted: profiled on fingerprint(s) "
                f"{', '.join(other)}, the runs on {next(iter(same_hw))}"
            )
        rows.append(entry)
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS), notes


def read_profile(path: str | Path) -> pd.DataFrame:
    """The rows of a ``fcasearch profile`` file: the CSV, or the JSON written beside it (a list
    of row objects, read as records: null is NaN, the fingerprint object its JSON text as in the
    CSV).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is neither (the message says to give the ``.csv``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"profile file {path} does not exist")
    give = "give the .csv (or the .json beside it) that `fcasearch profile` writes"
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{path}: not a profile JSON ({exc}); {give}") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: a profile JSON holds a list of row objects; {give}")
        flat = [
            {
                k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
                for k, v in r.items()
            }
            for r in rows
        ]
        return pd.DataFrame.from_records(flat).fillna(np.nan).infer_objects()
    try:
        return pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a profile CSV ({first}); {give}") from None


def _at_input(
    prof: pd.DataFrame, input_size: tuple[tuple[int, int], int] | None, path: Path
) -> tuple[pd.DataFrame, list[str]]:
    """The profile rows at the runs' input, and notes on the models left out."""
    if input_size is None or not len(prof):
        return prof, []
    (h, w), classes = input_size
    if "img_size" not in prof:
        return prof, [
            f"{path} records no input size (written by an older fcasearch): its markers are "
            f"taken as profiled at the runs' {h}x{w} px"
        ]
    size = prof["img_size"].astype(str).str.strip()
    count = pd.to_numeric(prof.get("num_classes", pd.Series(np.nan, index=prof.index)), "coerce")
    same = (size == f"{h}x{w}") & (count.isna() | (count == classes))
    notes = []
    for model, group in prof[~same].groupby("model", sort=False):
        if same[prof["model"] == model].any():
            continue  # the model has rows at the runs' input too
        found = sorted(
            {
                f"{s} px, {int(c)} classes" if pd.notna(c) else f"{s} px"
                for s, c in zip(size[group.index], count[group.index])
            }
        )
        notes.append(
            f"reference {model} from the profile omitted: profiled at {'; '.join(found)}, the "
            f"runs' models take {h}x{w} px and {classes} classes (MACs and latency grow with the "
            f"image: profile it with --img-size {h if h == w else f'{h}x{w}'} --classes {classes})"
        )
    return prof[same], notes


def merge_references(paper: pd.DataFrame, profiled: pd.DataFrame) -> pd.DataFrame:
    """One row per model: counted params/MACs of paper models win over profiled ones (they are
    counted at the run's input size); latency and memory come from the profile.

    Args:
        paper: Output of :func:`paper_references`.
        profiled: Output of :func:`profile_references`.

    Returns:
        The union, with the columns of ``REFERENCE_COLUMNS``.
    """
    if not len(paper):
        return profiled.reset_index(drop=True)
    merged = paper.set_index("model")
    extra = []
    for _, row in profiled.iterrows():
        if row["model"] in merged.index:
            for col in ("latency_ms", "peak_mem_mb"):
                merged.loc[row["model"], col] = row[col]
        else:
            extra.append(row)
    out = merged.reset_index()
    if extra:
        out = pd.concat([out, pd.DataFrame(extra)], ignore_index=True)
    return out[REFERENCE_COLUMNS]


def report_references(
    runs: list[RunData],
    fingerprints: dict[str, str],
    profile: str | Path | None,
    finals: dict[str, dict | None] | None = None,
) -> tuple[pd.DataFrame, list[str], str | None]:
    """The reference models of a report and its notes on them: the paper's figures, the first
    run's own measurements (its final rounds' where it had them), then a ``--profile`` CSV's rows
    at the runs' input, runtime and settings for the models the run did not measure itself.

    Returns:
        ``(table, notes, measured_by)``: ``measured_by`` is the label of the run whose own
        measurements give some of the latency or memory markers, None when none does (no
        ``references.csv``, an empty one, or only failed rows: every marker is then the
        paper's or the profile's). It is decided here only, where the markers are chosen.
    """
    img, classes, notes = run_input_shape(runs[0])
    refs, more = paper_references(img, classes)
    notes += more
    own = run_references(runs[0], (finals or {}).get(runs[0].label), name_run=len(runs) > 1)
    if len(own):  # measured with the run: its runtime, settings and (final) figures
        refs = merge_references(refs, own)
    if profile is not None:
        batch = _latency_batch_size(runs[0])
        runtime = runs[0].config.get("runtime")
        opts = runs[0].config.get("options") or {}
        prof, more = profile_references(
            profile,
            list(fingerprints),
            batch,
            runtime=runtime,
            runtime_options=str(runs[0].config.get("runtime_options") or ""),
            dtype=opts.get("latency_dtype") or None,
            threads=_latency_threads(runs),
            input_size=((img, img) if isinstance(img, int) else tuple(img), classes),
        )
        notes += more
        again = prof["model"].isin(own["model"])
        if again.any():
            notes.append(
                f"--profile rows of {', '.join(sorted(set(prof.loc[again, 'model'])))} not used: "
                "the run measured these models itself, beside its trials."
            )
        refs = merge_references(refs, prof[~again])
    measured = own[own["latency_ms"].notna() | own["peak_mem_mb"].notna()]
    if len(measured):
        which = "the run" if len(runs) == 1 else f"run {runs[0].label}"
        notes.append(
            f"Reference models {', '.join(measured['model'])} were measured with {which}, on "
            "its runtime and settings."
        )
    elif profile is None:
        notes.append(
            "No --profile CSV given: latency and memory axes have no reference models "
            "(profile them with `fcasearch profile` on this hardware)."
        )
    return refs, notes, (runs[0].label if len(measured) else None)


def _latency_threads(runs: list[RunData]) -> int | None:
    """The CPU threads the runs' latency was measured with, if their trial rows agree on one."""
    found = {t for run in runs for t in measured_threads(run)}
    return found.pop() if len(found) == 1 else None


def _latency_batch_size(run: RunData) -> int | None:
    """The batch size latency was measured at, if run.yaml says so (``options``, where a search
    records it, or an older run's top-level keys)."""
    opts = run.config.get("options") or {}
    if isinstance(opts, dict) and opts.get("latency_batch_size"):
        return int(opts["latency_batch_size"])
    for key in ("latency_batch_size", "measure_batch_size"):
        if run.config.get(key):
            return int(run.config[key])
    measure = run.config.get("measure")
    if isinstance(measure, dict) and measure.get("batch_size"):
        return int(measure["batch_size"])
    return None
