"""``fcasearch summary MODEL``: build an FcaFormer model and print its per-stage summary.

MODEL is a registry name, a spec JSON (a file or the text) or ``RUN_DIR:ARCH_ID``, resolved as
``fcasearch export`` resolves it (reference models such as ``convnext_tiny`` are refused: there is
no spec to count). ``--img-size`` and ``--classes`` apply to registry names; a spec JSON or a run's
trial fixes its own (they are part of its arch_id), and other values are refused.

Rows: the stem, each stage (its blocks plus the downsample after it) and the head, with the
parameters counted on the built model, the closed-form count (:mod:`fcasearch.measure.counting`)
beside them, the MACs per image and the token grid. The total must equal ``count_params(spec)``;
the command exits with status 1 if it does not.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a registered model name (fcaformer_l1 ... l4, fcaformer_tiny, fcaformer_nano), a spec "
        "as JSON text, the path of a .json file holding one, or RUN_DIR:ARCH_ID (a trial of a "
        "search run); FcaFormer models only",
    )
    parser.add_argument(
        "--img-size",
        default=None,
        help="input side, or HxW (e.g. 224x160), of a registered model (default 224); a spec JSON "
        "or RUN_DIR:ARCH_ID fixes its own, and another is refused",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=None,
        help="classifier outputs of a registered model (default 1000); a spec JSON or "
        "RUN_DIR:ARCH_ID fixes its own, and another is refused",
    )


def _parse_img(text: str | None) -> Any:
    if text is None:
        return None
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        raise ValueError(
            f"--img-size: {text!r} is not an int or HxW (e.g. 224 or 224x160)"
        ) from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return tuple(parts)
    raise ValueError(f"--img-size: {text!r} is not an int or HxW (e.g. 224 or 224x160)")


def resolve_spec(model: str, img_size: Any = None, classes: int | None = None):
    """The :class:`~fcasearch.spec.ArchSpec` named (built at ``img_size`` and ``classes``) or
    given as JSON (text or file), or logged by a search run (``RUN_DIR:ARCH_ID``); resolved as
    ``fcasearch export`` and ``profile`` resolve their MODEL
    (:func:`fcasearch.targets.resolve_model`, which refuses sizes and classes a spec does not
    have)."""
    from fcasearch.targets import resolve_model

    target = resolve_model(model, img_size=img_size, num_classes=classes)
    if target.spec is None:
        raise ValueError(
            f"model: {target.label} is a reference model, not an FcaFormer spec; summary "
            "describes FcaFormer models (registry names, spec JSON, RUN_DIR:ARCH_ID)"
        )
    return target.spec


def summary_rows(spec) -> list[dict[str, Any]]:
    """One dict per piece (stem, each stage, head): params on the built model and in closed form,
    MACs per image, grid."""
    import torch

    from fcasearch.measure.counting import cost_breakdown
    from fcasearch.models import build_model

    with torch.device("meta"):  # real modules, no memory
        model = build_model(spec)

    def n_params(*modules) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    costs = cost_breakdown(spec)
    stem = next(c for c in costs if c.name == "stem")
    head = next(c for c in costs if c.name == "head")
    rows = [{"piece": "stem", "params": n_params(model.stem), "closed_form": stem.params, "macs": stem.macs, "grid": "x".join(map(str, spec.grid(0)))}]  # fmt: skip
    for s, st in enumerate(spec.stages):
        mine = [c for c in costs if c.name.startswith(f"stage{s}.")]
        desc = f"stage{s} {st.kind} d{st.width}x{st.depth}" + (f" h{st.heads}" if st.heads else "")
        rows.append({
            "piece": desc,
            "params": n_params(model.stages[s]),
            "closed_form": sum(c.params for c in mine),
            "macs": sum(c.macs for c in mine),
            "grid": "x".join(map(str, spec.grid(s))),
        })  # fmt: skip
    rows.append({"piece": "head", "params": n_params(model.norm_head, model.head), "closed_form": head.params, "macs": head.macs, "grid": ""})  # fmt: skip
    return rows


def run(args: argparse.Namespace) -> int:
    from fcasearch.measure.counting import count_macs, count_params
    from fcasearch.spec import SpecError

    try:
        spec = resolve_spec(args.model, _parse_img(args.img_size), args.classes)
    except (SpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = summary_rows(spec)
    print(f"arch_id {spec.arch_id}")
    print(f"spec    {spec.short()}")
    print()
    print(f"{'piece':<28} {'grid':>7} {'params':>12} {'closed form':>12} {'MACs':>15}")
    for r in rows:
        print(
            f"{r['piece']:<28} {r['grid']:>7} {r['params']:>12,} {r['closed_form']:>12,} {r['macs']:>15,}"
        )
    total = sum(r["params"] for r in rows)
    expected = count_params(spec)
    macs = count_macs(spec)
    print(f"{'total':<28} {'':>7} {total:>12,} {expected:>12,} {macs:>15,}")
    print(
        f"MACs as the reference counts (queries for cross tokens too): {count_macs(spec, reference=True):,}"
    )
    if total != expected:
        print(
            f"error: the model has {total:,} parameters, count_params(spec) says {expected:,}",
            file=sys.stderr,
        )
        return 1
    print(f"params check: model == count_params(spec) == {expected:,}")
    return 0
