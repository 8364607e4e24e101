"""``fcasearch profile`` logic: resolve model names, measure a (model x batch x dtype x runtime)
grid, write it.

Models are registry names (``fcaformer_l1`` ...), baseline names (``convnext_tiny``, ``swin_t``,
``deit_s_like``), spec JSON (a file, or the text itself) or ``RUN_DIR:ARCH_ID``, resolved as
``fcasearch export`` resolves its MODEL. Candidates and reference models go through the same
:func:`~fcasearch.measure.cost.measure_costs` with the same settings: eval, the folded form where
one exists, the same runtimes. For each (model, batch size, dtype) the runtimes are measured side
by side (one model prepared on each, latencies in interleaved rounds), one row per runtime with
the columns of :data:`PROFILE_COLUMNS`. A cell that runs out of memory stays, with ``status``
``oom`` (and larger batch sizes of the same model and dtype are then marked ``oom`` without being
run once every runtime ran out).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fcasearch.measure.baselines import build_baseline, check_baseline
from fcasearch.measure.cost import METRIC_KEYS, measure_costs
from fcasearch.measure.fingerprint import fingerprint_id, hardware_fingerprint
from fcasearch.measure.graphs import check_graph_device
from fcasearch.measure.latency import cpu_threads
from fcasearch.measure.prepare import check_device, parse_dtype
from fcasearch.runtime import format_runtime_options
from fcasearch.spec import ArchSpec

__all__ = ["PROFILE_COLUMNS", "ProfileTarget", "profile_grid", "resolve_target", "write_profile"]

PROFILE_COLUMNS = (
    "model",
    "arch_id",
    "batch_size",
    "dtype",
    "img_size",
    "num_classes",
    "device",
    "runtime",
    "runtime_version",
    "runtime_options",
    "threads",
    *METRIC_KEYS,
    "latency_attempts",
    "avg_power_w",
    "status",
    "reason",
    "notes",
    "measure_seconds",
    "fingerprint_id",
    "fingerprint",
)


@dataclass(frozen=True)
class ProfileTarget:
    """One model to profile: an FcaFormer spec, or a baseline built on demand."""

    label: str
    spec: ArchSpec | None = None
    baseline: str | None = None
    img_size: int = 224
    num_classes: int = 1000

    def build(self) -> ArchSpec | nn.Module:
        """The spec itself, or a freshly built baseline module."""
        if self.spec is not None:
            return self.spec
        assert self.baseline is not None
        return build_baseline(self.baseline, img_size=self.img_size, num_classes=self.num_classes)

    @property
    def arch_id(self) -> str:
        return self.spec.arch_id if self.spec is not None else ""

    @property
    def input(self) -> dict[str, Any]:
        """The row columns of its input: ``img_size`` as ``HxW`` and ``num_classes`` (a report
        draws a marker only at its runs' input, where MACs and latency are comparable)."""
        if self.spec is not None:
            (h, w), classes = self.spec.img_size, self.spec.num_classes
        else:
            h = w = self.img_size
            classes = self.num_classes
        return {"img_size": f"{h}x{w}", "num_classes": classes}


def resolve_target(
    name: str, *, img_size: int | None = None, num_classes: int | None = None
) -> ProfileTarget:
    """Turn a command-line model name into a :class:`ProfileTarget`.

    Names are resolved as ``fcasearch export`` and ``summary`` resolve theirs
    (:func:`fcasearch.targets.resolve_model`).

    Args:
        name: a registry name, a baseline name, spec JSON text, the path of a spec JSON file, or
            ``RUN_DIR:ARCH_ID`` (the spec a search run logged for that trial).
        img_size: square input side (default: 224 for named models; a spec JSON or run trial
            fixes its own, and another is refused).
        num_classes: classifier outputs (default: 1000 for named models; a spec JSON or run
            trial fixes its own, and another is refused).

    Raises:
        ValueError: an unknown name, an unreadable file, an invalid spec, or an ``img_size`` or
            ``num_classes`` a spec does not have (the message says which).
    """
    from fcasearch.targets import resolve_model

    target = resolve_model(name, img_size=img_size, num_classes=num_classes)
    if target.baseline is not None:
        side, classes = img_size or 224, num_classes or 1000
        check_baseline(target.baseline, img_size=side, num_classes=classes)
        return ProfileTarget(
            target.label, baseline=target.baseline, img_size=side, num_classes=classes
        )
    spec = target.spec
    label = f"spec {spec.arch_id}" if target.kind == "text" else target.label
    return ProfileTarget(label, spec=spec)


def _failed_row(
    target: ProfileTarget,
    bs: int,
    dtype: str,
    device: str,
    status: str,
    reason: str,
    fp: dict,
    runtime: Any,
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(PROFILE_COLUMNS, "")
    row.update({k: math.nan for k in (*METRIC_KEYS, "avg_power_w")})
    row.update(
        model=target.label,
        arch_id=target.arch_id,
        batch_size=bs,
        dtype=dtype,
        device=device,
        runtime=runtime.name,
        runtime_version=runtime.version,
        threads=fp.get("threads"),
        latency_stable=None,
        status=status,
        reason=reason,
        measure_seconds=0.0,
        fingerprint_id=fingerprint_id(fp),
        fingerprint=json.dumps(fp, sort_keys=True),
    )
    return row


def profile_grid(
    targets: Sequence[ProfileTarget],
    *,
    device: str = "cpu",
    batch_sizes: Sequence[int] = (1,),
    dtypes: Sequence[str] = ("fp32",),
    runtimes: Sequence[str] = ("eager",),
    threads: int | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    **measure_kwargs: Any,
) -> list[dict[str, Any]]:
    """Measure every (model, batch size, dtype) cell on every runtime with
    :func:`~fcasearch.measure.cost.measure_costs` (runtimes side by side within a cell).

    Args:
        targets: models from :func:`resolve_target`.
        device: ``cpu`` or ``cuda[:N]``.
        batch_sizes: batch sizes, each measured separately (ascending order skips sizes above
            one that ran out of memory).
        dtypes: ``fp32``, ``bf16``, ``fp16``.
        runtimes: runtime names (:func:`fcasearch.runtime.list_runtimes`); one row each.
        threads: CPU threads for every cell.
        on_row: called with each row as it is finished (progress display).
        **measure_kwargs: passed to :func:`measure_costs` (``channels_last``, ``cuda_graph``,
            ``latency``, ``memory``, ``energy``, the timing caps, ``cv_threshold``, ``retries``,
            ``runtime_options``).

    Returns:
        The rows, in grid order, runtimes innermost. A cell that raised is kept with ``status``
        ``failed``.

    Raises:
        RuntimeUnavailable: a runtime is not installed or does not suit the device (before
            anything is measured).
        ValueError: a bad argument.
    """
    from fcasearch.runtime import get_runtime, parse_runtimes

    dev = str(check_device(device))
    if measure_kwargs.get("cuda_graph"):
        check_graph_device(dev)  # once for the grid, not a failed row per cell
    for d in dtypes:
        parse_dtype(d)
    bad = [b for b in batch_sizes if not isinstance(b, int) or b < 1]
    if bad:
        raise ValueError(f"batch_sizes: {bad} are not positive integers")
    names = parse_runtimes(list(runtimes))
    options = measure_kwargs.get("runtime_options") or {}
    rts = [get_runtime(n, **options.get(n, {})) for n in names]
    for rt in rts:
        rt.check(dev)
    recorded = {n: format_runtime_options(rt.options) for n, rt in zip(names, rts)}
    rows: list[dict[str, Any]] = []
    with cpu_threads(threads) as used:
        fp = hardware_fingerprint(dev, used)
        cell = {"device": dev, "threads": used, "fingerprint": fp, "runtimes": names}
        cell.update(measure_kwargs)
        for target in targets:
            model = None  # a baseline is built once and copied by every measurement
            for dtype in dtypes:
                oom_at: int | None = None
                for bs in batch_sizes:
                    if oom_at is not None and bs > oom_at:
                        reason = f"skipped: batch size {oom_at} already ran out of memory"
                        cell_rows = [
                            _failed_row(target, bs, dtype, dev, "oom", reason, fp, rt) for rt in rts
                        ]
                    else:
                        try:
                            if model is None:
                                model = target.build()
                            results = measure_costs(
                                model, batch_size=bs, dtype=dtype, img_size=target.img_size, **cell
                            )
                            cell_rows = [{"model": target.label, **r.to_row()} for r in results]
                            if all(r.status == "oom" for r in results):
                                oom_at = bs
                        except Exception as exc:  # one bad cell must not end the whole profile
                            text = str(exc).strip().splitlines()
                            reason = f"{type(exc).__name__}: {text[0] if text else ''}"
                            cell_rows = [
                                _failed_row(target, bs, dtype, dev, "failed", reason, fp, rt)
                                for rt in rts
                            ]
                    for row in cell_rows:
                        row["runtime_options"] = recorded[row["runtime"]]
                        row.update(target.input)
                        rows.append(row)
                        if on_row is not None:
                            on_row(row)
    return rows


def _csv_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def _json_value(key: str, value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if key == "fingerprint" and isinstance(value, str) and value:
        return json.loads(value)
    return value


def write_profile(rows: Sequence[dict[str, Any]], out: str | Path) -> tuple[Path, Path]:
    """Write rows to ``out`` (CSV; NaN as empty cells) and to the same name with ``.json``.

    The JSON file holds a list of row objects (NaN as null, the fingerprint as an object).

    Returns:
        The CSV path and the JSON path.
    """
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ValueError(f"out: {str(out)!r} must name a .csv file (the JSON goes next to it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = sorted({k for r in rows for k in r} - set(PROFILE_COLUMNS))
    columns = [*PROFILE_COLUMNS, *extra]
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_value(r.get(k, "")) for k in columns})
    json_path = out.with_suffix(".json")
    payload = [{k: _json_value(k, r.get(k, "")) for k in columns} for r in rows]
    json_path.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return out, json_path
