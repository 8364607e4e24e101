"""Reference models measured like the candidates, and the final re-measurement of a search.

* **Reference models** (``--references``: FcaFormer registry names and the torchvision baselines
  of :mod:`fcasearch.measure.baselines`) are measured once, before the first trial, by the same
  call and with the same settings as every candidate (:func:`~fcasearch.search.objective.
  measure_settings`: runtime, device, batch size, dtype, threads, stability threshold), at the
  space's input size and class count (torchvision baselines take 3 channels). Their rows go to
  ``references.csv``; a model the runtime cannot run gets ``status=unsupported`` and no number.
* **Final re-measurement**: when the trials are done, the Pareto set and the reference models are
  timed again together in ``--final-rounds`` interleaved rounds (every model once per round,
  the order rotating, each timed run right after an untimed one of the same model;
  :func:`~fcasearch.measure.rounds.measure_rounds`). Unlike the in-search
  figures, which were taken one trial at a time at different moments, these are taken under the
  same conditions, so their ranking is fair. They go to ``final.json`` with the Kendall tau
  between the in-search and the final latencies of the models measured both times (1: the
  ranking did not move; 0: unrelated), over all of them and over the Pareto set alone. The
  report uses the final figures.

Both hold the device lock exclusively (:mod:`fcasearch.search.devicelock`) and run where the
trials run: in the driver for the local executor, in a Ray task with a trial's resources for
``--executor ray`` (:mod:`fcasearch.search.ray_measure`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fcasearch.search.objective import TrialContext, measure_settings
from fcasearch.storage.records import RunDir

# final / in-search latency beyond this factor (either way) is named in final.json's "moved" and
# the closing line: in quickstarts on a 2-core AMD EPYC with other work running, Pareto members
# moved 0.93-1.23x; in-search measurements that load slowed alike (a low spread) moved 3-211x
MOVED_FACTOR = 1.5

__all__ = [
    "FINAL_JSON",
    "REFERENCES_CSV",
    "SearchMeasurements",
    "kendall_tau",
    "run_job",
    "summary_line",
]

FINAL_JSON = "final.json"
REFERENCES_CSV = "references.csv"

# job name, payload -> result: runs a measurement job where the trials run
JobRunner = Callable[[str, dict[str, Any]], Any]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two paired samples (ties handled); NaN with fewer than 2 pairs or when
    either sample is constant."""
    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            dx = pairs[i][0] - pairs[j][0]
            dy = pairs[i][1] - pairs[j][1]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    n0 = concordant + discordant
    denom = math.sqrt((n0 + ties_x) * (n0 + ties_y))
    return (concordant - discordant) / denom if denom > 0 else math.nan


def _reference_target(name: str, space: Any) -> tuple[Any, tuple[int, int], int]:
    """(spec or module, input side, channels) of a reference model at the space's input."""
    from fcasearch.measure.baselines import BASELINES, build_baseline

    side = space.img_sizes[0]
    if name in BASELINES:
        model = build_baseline(name, img_size=side, num_classes=space.num_classes)
        return model, (side, side), 3
    from fcasearch.models.registry import get_spec

    spec = get_spec(name, img_size=side, num_classes=space.num_classes, in_chans=space.in_chans)
    return spec, spec.img_size, spec.in_chans


def measure_references(ctx: TrialContext) -> list[dict[str, Any]]:
    """The in-search rows of the run's reference models (module docstring)."""
    from fcasearch.measure import measure_cost
    from fcasearch.runtime import format_runtime_options

    rows = []
    for name in ctx.options.references:
        try:
            model, hw, chans = _reference_target(name, ctx.space)
        except ValueError as exc:  # a baseline that does not suit the space's input size
            rows.append({"model": name, "status": "unsupported", "reason": str(exc)})
            continue
        cost = measure_cost(
            model,
            **measure_settings(ctx.options),
            img_size=hw,
            in_chans=chans,
            energy=False,
            exclusive=ctx.measuring,
        )
        row = cost.to_row()
        # the settings a profile row records too: the input and the runtime's options
        row["img_size"], row["num_classes"] = f"{hw[0]}x{hw[1]}", ctx.space.num_classes
        row["runtime_options"] = format_runtime_options(ctx.options.runtime_kwargs)
        if cost.status != "ok":  # never a number for a model the runtime cannot run
            for key in ("latency_ms", "latency_p90_ms", "latency_cv", "throughput_ips"):
                row[key] = math.nan
            row["latency_stable"] = None
        rows.append({"model": name, **row})
    return rows


def final_rounds(ctx: TrialContext, items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Time ``items`` (``name`` and a ``spec`` JSON or a reference ``model`` name) in the run's
    interleaved rounds; name -> :meth:`~fcasearch.measure.rounds.RoundsResult.to_dict`."""
    from fcasearch.measure.rounds import RoundTarget, measure_rounds
    from fcasearch.spec import ArchSpec

    o = ctx.options
    targets, failed = {}, {}
    for item in items:
        if item.get("spec"):
            targets[item["name"]] = RoundTarget(ArchSpec.from_json(item["spec"]))
            continue
        try:
            model, hw, chans = _reference_target(item["model"], ctx.space)
        except ValueError as exc:
            failed[item["name"]] = {"status": "unsupported", "reason": str(exc)}
            continue
        targets[item["name"]] = RoundTarget(model, hw, chans)
    got: dict[str, dict[str, Any]] = {}
    if targets:
        with ctx.measuring():
            res = measure_rounds(
                targets,
                runtime=o.runtime,
                runtime_options=o.runtime_kwargs,
                device=o.device,
                batch_size=o.latency_batch_size,
                dtype=o.latency_dtype,
                threads=o.threads,
                rounds=o.final_rounds,
                cv_threshold=o.latency_cv_threshold,
            )
        got = {name: r.to_dict() for name, r in res.items()}
    return {item["name"]: got.get(item["name"]) or failed[item["name"]] for item in items}


def run_job(job: str, ctx: TrialContext, payload: dict[str, Any]) -> Any:
    """Run a measurement job (``references`` or ``final``) in this process."""
    if job == "references":
        return measure_references(ctx)
    if job == "final":
        return final_rounds(ctx, payload["items"])
    raise ValueError(f"job: {job!r} is not 'references' or 'final'")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class SearchMeasurements:
    """The measurements of a search outside its trials: the references before the first trial,
    the final re-measurement after the last (module docstring).

    Args:
        ctx: the run's context (options, space).
        run: the run directory.
    """

    def __init__(self, ctx: TrialContext, run: RunDir) -> None:
        self.ctx, self.run = ctx, run
        self.final: dict[str, Any] | None = None

    @property
    def needed(self) -> bool:
        """Whether the run measures latency at all (else there is nothing to re-measure; a dry
        run's trials measure nothing)."""
        from fcasearch.search.dry import dry_budget
        from fcasearch.search.objective import _needs_measure

        o = self.ctx.options
        return dry_budget(o.budget) is None and _needs_measure(o, self.ctx.space)

    @property
    def references_csv(self) -> Path:
        return self.run.root / REFERENCES_CSV

    @property
    def final_json(self) -> Path:
        return self.run.root / FINAL_JSON

    def before(self, call: JobRunner) -> None:
        """Measure the reference models once per run (a resumed run keeps its rows)."""
        if not self.needed or not self.ctx.options.references or self.references_csv.exists():
            return
        rows = call("references", {})
        tmp = self.references_csv.with_suffix(".tmp")
        pd.DataFrame(rows).to_csv(tmp, index=False)
        tmp.replace(self.references_csv)

    def after(self, call: JobRunner, front: pd.DataFrame) -> dict[str, Any] | None:
        """Re-measure the Pareto set ``front`` and the references in interleaved rounds; write
        and return ``final.json``'s content (None when the run has nothing to re-measure)."""
        o = self.ctx.options
        if not self.needed or o.final_rounds < 1:
            return None
        items: list[dict[str, Any]] = []
        seen: dict[str, dict[str, Any]] = {}  # arch_id -> its item: a repeated arch is timed once
        for _, row in front.iterrows():
            if row.get("arch_id") in seen:
                seen[row["arch_id"]]["trials"].append(int(row["trial"]))
                continue
            if isinstance(row.get("spec"), str) and row["spec"]:
                items.append(
                    {
                        "name": f"trial {int(row['trial'])}",
                        "kind": "candidate",
                        "arch_id": row["arch_id"],
                        "trial": int(row["trial"]),
                        "trials": [int(row["trial"])],
                        "spec": row["spec"],
                        "search_latency_ms": _float(row.get("latency_ms")),
                        "search_latency_cv": _float(row.get("latency_cv")),
                        "search_latency_stable": _bool(row.get("latency_stable")),
                    }
                )
                seen[row["arch_id"]] = items[-1]
        refs = self._reference_rows()
        for ref in refs:
            items.append(
                {
                    "name": str(ref["model"]),
                    "kind": "reference",
                    "model": str(ref["model"]),
                    "search_latency_ms": _float(ref.get("latency_ms")),
                    "search_latency_cv": _float(ref.get("latency_cv")),
                    "search_latency_stable": _bool(ref.get("latency_stable")),
                }
            )
        if not items:
            return None
        payload = [{k: it[k] for k in ("name", "spec", "model") if k in it} for it in items]
        measured = call("final", {"items": payload})
        models = []
        for it in items:
            got = measured.get(it["name"]) or {}
            entry = {k: v for k, v in it.items() if k != "spec"}
            entry.update(
                {f"final_{k}" if k.startswith("latency") else k: v for k, v in got.items()}
            )
            models.append(entry)
        both = [  # measured both times (a latency is a positive time; 0 or less: not one)
            m
            for m in models
            if _finite(m.get("search_latency_ms"))
            and _finite(m.get("final_latency_ms"))
            and m["search_latency_ms"] > 0
            and m["final_latency_ms"] > 0
        ]
        tau = kendall_tau(
            [m["search_latency_ms"] for m in both], [m["final_latency_ms"] for m in both]
        )
        # the Pareto set alone: references often span a far wider range, which keeps tau high
        front_only = [m for m in both if m["kind"] == "candidate"]
        tau_front = kendall_tau(
            [m["search_latency_ms"] for m in front_only],
            [m["final_latency_ms"] for m in front_only],
        )
        # a model whose final latency is far from its in-search one: that measurement (or this
        # one) met a disturbance its own spread did not show (a whole attempt slowed alike)
        moved = sorted(
            (m for m in both if not 1 / MOVED_FACTOR <= _moved_ratio(m) <= MOVED_FACTOR),
            key=lambda m: -abs(math.log(_moved_ratio(m))),
        )
        version = next((m.get("runtime_version") for m in models if m.get("runtime_version")), "")
        self.final = {
            "runtime": o.runtime,
            "runtime_version": version,
            "runtime_options": o.runtime_kwargs,
            "rounds": o.final_rounds,
            "method": (
                f"{len(models)} models prepared on {o.runtime_label}, then timed in "
                f"{o.final_rounds} "
                "interleaved rounds (every model once per round, the order rotating, each timed "
                "run right after an untimed one of the same model), batch "
                f"{o.latency_batch_size}, {o.latency_dtype}, device {o.device}, threads "
                f"{o.measured_threads()}; unstable ones re-measured with backoff"
            ),
            "kendall_tau": None if math.isnan(tau) else round(tau, 6),
            "kendall_pairs": len(both),
            "kendall_tau_pareto": None if math.isnan(tau_front) else round(tau_front, 6),
            "kendall_pairs_pareto": len(front_only),
            "moved": [
                {
                    k: m.get(k)
                    for k in ("name", "kind", "search_latency_ms", "search_latency_stable")
                }
                | {
                    "final_latency_ms": m["final_latency_ms"],
                    "ratio": float(f"{_moved_ratio(m):.4g}"),
                }
                for m in moved
            ],
            "models": models,
        }
        tmp = self.final_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(_clean(self.final), indent=2, default=_json_default) + "\n")
        tmp.replace(self.final_json)
        return self.final

    def _reference_rows(self) -> list[dict[str, Any]]:
        if not self.ctx.options.references:
            return []
        if self.references_csv.exists():
            return pd.read_csv(self.references_csv).to_dict("records")
        return [{"model": name} for name in self.ctx.options.references]


def _moved_ratio(model: dict[str, Any]) -> float:
    """Final over in-search latency of a model measured both times."""
    return model["final_latency_ms"] / model["search_latency_ms"]


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _bool(v: Any) -> bool | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.lower())
    return bool(v)


def _clean(v: Any) -> Any:
    """NaN and infinities as null: final.json stays strict JSON."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _json_default(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def summary_line(final: dict[str, Any]) -> str:
    """One line for the end of a search: what was re-measured, its CVs and the Kendall tau."""
    models = final["models"]
    cvs = [m["final_latency_cv"] for m in models if _finite(m.get("final_latency_cv"))]
    unstable = sum(1 for m in models if m.get("final_latency_stable") is False)
    cands = sum(1 for m in models if m["kind"] == "candidate")
    tau = final.get("kendall_tau")
    spread = (
        f"robust CV median {statistics.median(cvs):.3f} (max {max(cvs):.3f}), {unstable} unstable"
        if cvs
        else "no latency measured"
    )
    moved = (
        f"Kendall tau in-search vs final {tau:.3f} over {final['kendall_pairs']} models"
        if tau is not None
        else "Kendall tau undefined (fewer than 2 models measured both times)"
    )
    from fcasearch.runtime import runtime_label

    on = runtime_label(final["runtime"], final.get("runtime_options") or {})
    front_tau = final.get("kendall_tau_pareto")
    if front_tau is not None:
        moved += f" ({front_tau:.3f} over the {final['kendall_pairs_pareto']} Pareto models alone)"
    far = final.get("moved") or []
    if far:
        shown = ", ".join(
            f"{m['name']} {m['search_latency_ms']:.3g} -> {m['final_latency_ms']:.3g} ms"
            + (" (in-search marked stable)" if m.get("search_latency_stable") else "")
            for m in far[:3]
        )
        more = f" and {len(far) - 3} more" if len(far) > 3 else ""
        moved += (
            f"; moved over {MOVED_FACTOR:g}x from the in-search figure (that measurement met "
            f"load its spread did not show): {shown}{more}"
        )
    return (
        f"final re-measurement: {cands} Pareto + {len(models) - cands} reference models in "
        f"{final['rounds']} interleaved rounds on {on}: {spread}; {moved}"
    )
