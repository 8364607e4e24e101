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
Runtime on the example and its negation and compared with the eager model before the command
reports success; the max abs difference is printed. Any failure says why and exits non-zero (2
for a user error, 1 when the export or its check fails).
"""

from __future__ import annotations

import argparse
import sys
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
    try:
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"--weights {path}: does not fit the model: {first}") from None
    return f"weights {path}"


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


def _check_img_size(target: ModelTarget, img_size: int | None) -> None:
    """Refuse ``--img-size`` for a spec that fixes its own input size (JSON or a run's trial).

    The spec is the model: its ``img_size`` is part of its ``arch_id``, and the token grids set
    the shapes of the attention biases, so a trial's saved weights fit no other size. Exporting
    something else under the name given, or silently at the spec's size, would both mislead.
    """
    if img_size is None or target.kind in ("registry", "baseline"):
        return
    own = tuple(target.spec.img_size)
    if own == (img_size, img_size):
        return
    side = "x".join(map(str, own))
    if target.kind == "run":
        what = (
            f"{target.label} is a trial of a search run, whose spec fixes the input size at "
            f"{side} (the size it was searched and trained at; its weights fit no other)"
        )
    else:
        what = (
            f"MODEL is a spec JSON, which fixes the input size at {side} (img_size is part of "
            f"its arch_id {target.spec.arch_id}; change it in the JSON to export another size)"
        )
    raise ValueError(
        f"--img-size {img_size}: {what}; --img-size applies to registry and reference models only"
    )


def run(args: argparse.Namespace) -> int:
    """Export and verify; 2 on a user error, 1 if the export or its check failed, else 0."""
    import torch

    from fcasearch.runtime import RuntimeUnavailable, UnsupportedModel
    from fcasearch.runtime.onnx import export_onnx, verify_onnx

    def fail(code: int, text: str) -> int:
        print(f"fcasearch export: error: {text}", file=sys.stderr)
        return code

    if args.batch_size < 1:
        return fail(2, f"--batch-size {args.batch_size}: must be >= 1")
    try:
        target = resolve_model(args.model, img_size=args.img_size)
        _check_img_size(target, args.img_size)
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
    example = torch.randn(args.batch_size, chans, *hw, generator=torch.Generator().manual_seed(0))
    try:
        info = export_onnx(
            model,
            example,
            args.out,
            exporter=args.exporter,
            opset=args.opset,
            dynamic_batch=args.dynamic_batch,
        )
        diffs = [verify_onnx(info.path, model, example)]
        if args.dynamic_batch:  # another batch size through the free dimension
            other = torch.randn(args.batch_size + 1, chans, *hw)
            diffs.append(verify_onnx(info.path, model, other))
    except RuntimeUnavailable as exc:
        return fail(2, str(exc))
    except UnsupportedModel as exc:
        return fail(1, f"{args.out} does not match the model: {exc}")
    except Exception as exc:  # the exporters raise many types
        text = str(exc).strip().splitlines()
        return fail(1, f"export failed: {type(exc).__name__}: {text[0] if text else ''}")
    import onnxruntime

    size_mb = info.path.stat().st_size / 2**20
    batch = "batch free" if args.dynamic_batch else f"batch {args.batch_size}"
    arch = f" (arch_id {spec.arch_id})" if spec is not None else ""
    print(
        f"exported {target.label}{arch} to {info.path} ({size_mb:.1f} MiB, opset {info.opset}, "
        f"torch.onnx {info.exporter} exporter, {info.seconds:.1f} s); input 'images' "
        f"({batch}, {chans}, {hw[0]}, {hw[1]}) float32, output 'logits'; {how}"
    )
    print(
        f"verified with ONNX Runtime {onnxruntime.__version__} (CPUExecutionProvider): max abs "
        f"diff vs eager {max(diffs):.3g}"
    )
    return 0
