"""``fcasearch export``: the deployable model as an ONNX file, verified with ONNX Runtime.

Examples::

    fcasearch export fcaformer_l1 --format onnx --out l1.onnx
    fcasearch export best.json --format onnx --out best.onnx --weights best.pt
    fcasearch export results/micro-run:3f2a9c1b7d4e --format onnx --out trial.onnx

MODEL is a registry name (``fcaformer_l1`` ..., or a reference model such as ``convnext_tiny``),
a spec JSON (a file, or the JSON text itself), or ``RUN_DIR:ARCH_ID``: a trial of a search run,
built from the spec the run logged, with the weights it saved at ``RUN_DIR/weights/ARCH_ID.pt``
(``fcasearch search --save-weights``) unless ``--weights`` names others; a trial the search did
not complete (infeasible, pruned, failed) is exported with a warning naming its status and reason.
``--img-size`` applies to registry and reference models: a spec fixes its own input size (it is
part of the arch_id), so another size is refused for spec JSON and run trials. FcaFormer models are
exported in their folded inference form (Conv-BN and layer scales folded); without weights, they
first get trained-like layer scales, norms and biases and BN statistics calibrated on random
inputs, as latency measurement does (fresh ones leave the logits at about 1e-19 and every block
nearly out of them, so the check could not see a block exported wrong). The file is run in ONNX
Runtime on the example and its negation (with ``--dynamic-batch``, at batch 1, 3 and
``--batch-size``) and compared with the eager model before the command reports success; the max
abs difference is printed. It is written beside ``--out`` and moved there only then: a failure
leaves nothing at ``--out`` (and a file already there untouched), says why and exits non-zero (2
for a user error, 1 when the export or its check fails).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from fcasearch.targets import ModelTarget, path_is, resolve_model

__all__ = ["add_arguments", "load_weights", "run"]


def load_weights(model: Any, path: Path) -> str:
    """Load ``path`` into ``model`` (fcasearch's own keys, or the official FcaFormer layout,
    possibly wrapped under ``model``/``state_dict``); a note on what was loaded.

    Raises:
        ValueError: the file is unreadable or its tensors do not fit the model (says which).
    """
    import pickle
    import re

    import torch

    if not path_is(path, "is_file"):
        raise ValueError(f"--weights {path}: no such file")
    expected = (
        "expected a file written by torch.save holding a state dict (parameter name -> tensor, "
        "possibly under 'model' or 'state_dict'), such as RUN_DIR/weights/ARCH_ID.pt from "
        "fcasearch search --save-weights or an official FcaFormer checkpoint"
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ValueError(f"--weights {path}: cannot read it: {exc.strerror or exc}") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: (?:GLOBAL )?([\w.]+)", str(exc))
        if found:  # a real checkpoint, holding more than tensors
            raise ValueError(
                f"--weights {path}: a PyTorch checkpoint holding objects other than tensors "
                f"({found.group(1)}), which this command does not unpickle (that could run "
                f"code); {expected}"
            ) from None
        raise ValueError(
            f"--weights {path}: not a PyTorch checkpoint this command can read; {expected}"
        ) from None
    except Exception:  # torch.load on junk raises KeyError, EOFError, RuntimeError, ...
        raise ValueError(
            f"--weights {path}: not a PyTorch checkpoint this command can read; {expected}"
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"--weights {path}: holds a {type(state).__name__}, not a state dict")
    keys = [k.removeprefix("module.") for k in state]
    if any(k.startswith(("patch_embed.", "layer_")) for k in keys):
        from fcasearch.models import load_reference_checkpoint

        try:
            load_reference_checkpoint(model, state)
        except ValueError as exc:
            raise ValueError(f"--weights {path}: {exc}") from None
        return f"weights {path} (official FcaFormer layout)"
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"--weights {path}: does not fit the model: {_misfit(model, state, exc)}"
        ) from None
    return f"weights {path}"


def _few(items: list[str], shown: int = 3) -> str:
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def _misfit(model: Any, state: dict[str, Any], exc: RuntimeError) -> str:
    """Why ``state`` does not load into ``model``: the tensors whose shapes differ, the keys
    missing and those unexpected (a few of each, with a count of the rest)."""
    from fcasearch.runtime.errors import error_summary

    own = model.state_dict()
    shapes = [
        f"{k} is {tuple(v.shape)}, the model's {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = [
        f"{what} ({len(items)}): {_few(items)}"
        for what, items in (
            ("tensors of another shape", shapes),
            ("missing keys", missing),
            ("unexpected keys", unexpected),
        )
        if items
    ]
    return "; ".join(parts) if parts else error_summary(exc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fcasearch export``."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="registry name (fcaformer_l1 ...), spec JSON (file or text) or RUN_DIR:ARCH_ID",
    )
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="onnx (the default)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="file to write")
    parser.add_argument(
        "--weights", type=Path, default=None, metavar="CKPT", help="state dict to load first"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="example batch (default 1)")
    parser.add_argument(
        "--dynamic-batch", action="store_true", help="leave the batch dimension free"
    )
    parser.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="input side of a registry or reference model (default 224); refused for a spec "
        "JSON or RUN_DIR:ARCH_ID of another size, whose spec fixes it",
    )
    parser.add_argument(
        "--exporter",
        choices=["dynamo", "torchscript"],
        default="dynamo",
        help="torch.onnx exporter (default dynamo; needs onnxscript)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (exporter default)")


def _build(target: ModelTarget, weights: Path | None, img_size: int | None) -> tuple[Any, str]:
    from fcasearch.runtime import inference_form

    if target.baseline is not None:
        from fcasearch.measure.baselines import build_baseline

        model = build_baseline(target.baseline, img_size=img_size or 224)
    else:
        from fcasearch.models import build_model

        model = build_model(target.spec)
    path = weights or target.weights
    if path is None and target.spec is not None:
        # the form latency measurement times: fresh BN statistics leave the logits at about
        # 1e-19 and layer scales of 1e-6 keep every block out of them, so the check against
        # eager could not see a block exported wrong
        from fcasearch.measure.prepare import deployable, trained_like_values

        model, how = deployable(trained_like_values(model))
        return model, (
            "freshly initialised weights, trained-like layer scales, norms and biases (as latency "
            f"measurement does); {how}"
        )
    loaded = load_weights(model, path) if path is not None else "freshly initialised weights"
    model, how = inference_form(model)
    return model, f"{loaded}; {how}"


def run(args: argparse.Namespace) -> int:
    """Export and verify; 2 on a user error, 1 if the export or its check failed, else 0."""
    import torch

    from fcasearch.runtime import RuntimeUnavailable, UnsupportedModel
    from fcasearch.runtime.errors import error_summary
    from fcasearch.runtime.onnx import export_onnx, verify_onnx

    def fail(code: int, text: str) -> int:
        text = text.replace("\n", "\n  ")  # the lines of a long error, under the first
        print(f"fcasearch export: error: {text}", file=sys.stderr)
        return code

    if args.batch_size < 1:
        return fail(2, f"--batch-size {args.batch_size}: must be >= 1")
    out: Path = args.out
    if path_is(out, "is_dir"):
        return fail(2, f"--out {out}: is a folder; name the .onnx file to write")
    try:
        target = resolve_model(args.model, img_size=args.img_size)
        if target.warning:
            print(target.warning, file=sys.stderr)
        if target.note and args.weights is None:
            print(target.note, file=sys.stderr)
        model, how = _build(target, args.weights, args.img_size)
    except ValueError as exc:
        return fail(2, str(exc))
    spec = target.spec
    chans, hw = (
        (spec.in_chans, spec.img_size) if spec is not None else (3, (args.img_size or 224,) * 2)
    )

    def images(batch: int) -> torch.Tensor:
        return torch.randn(batch, chans, *hw, generator=torch.Generator().manual_seed(batch))

    # a free batch is checked at batch 1 and another one: the export traces at least 2, so a
    # batch it fixed all the same cannot pass
    batches = sorted({args.batch_size, 1, 3}) if args.dynamic_batch else [args.batch_size]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent)
    except OSError as exc:
        return fail(2, f"--out {out}: cannot write there: {exc.strerror or exc}")
    # written beside --out and moved there once verified: a failure leaves nothing at --out
    # (and a file already there as it was)
    with staging as folder:
        try:
            info = export_onnx(
                model,
                images(args.batch_size),
                Path(folder) / out.name,
                exporter=args.exporter,
                opset=args.opset,
                dynamic_batch=args.dynamic_batch,
            )
        except RuntimeUnavailable as exc:
            return fail(2, str(exc))
        except Exception as exc:  # the exporters raise many types
            hint = ""
            if args.dynamic_batch and args.exporter == "dynamo":
                hint = "\n(with --dynamic-batch, --exporter torchscript may export it)"
            return fail(1, f"export failed, nothing written to {out}: {error_summary(exc)}{hint}")
        try:
            diffs = [verify_onnx(info.path, model, images(b)) for b in batches]
        except RuntimeUnavailable as exc:
            return fail(2, str(exc))
        except UnsupportedModel as exc:
            return fail(
                1, f"the exported file does not match the model, not written to {out}: {exc}"
            )
        size_mb = info.path.stat().st_size / 2**20
        os.replace(info.path, out)
    import onnxruntime

    batch = "batch free" if args.dynamic_batch else f"batch {args.batch_size}"
    arch = f" (arch_id {spec.arch_id})" if spec is not None else ""
    print(
        f"exported {target.label}{arch} to {out} ({size_mb:.1f} MiB, opset {info.opset}, "
        f"torch.onnx {info.exporter} exporter, {info.seconds:.1f} s); input 'images' "
        f"({batch}, {chans}, {hw[0]}, {hw[1]}) float32, output 'logits'; {how}"
    )
    *most, last = map(str, batches)
    at = f" at batch {', '.join(most)} and {last}" if args.dynamic_batch else ""
    print(
        f"verified with ONNX Runtime {onnxruntime.__version__} (CPUExecutionProvider){at}: max "
        f"abs diff vs eager {max(diffs):.3g}"
    )
    return 0
