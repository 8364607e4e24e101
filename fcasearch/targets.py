"""What a command-line MODEL names: the one resolver of ``fcasearch export``, ``profile`` and
``summary``.

MODEL is a registry name (``fcaformer_l1`` ...), a reference model (``convnext_tiny``, ``swin_t``,
``deit_s_like``), a spec JSON (a file, or the JSON text itself), or ``RUN_DIR:ARCH_ID``: a trial of
a search run, built from the spec the run logged, with the weights it saved at
``RUN_DIR/weights/ARCH_ID.pt`` (``fcasearch search --save-weights``) where there are some; a trial
the search did not complete (infeasible, pruned, failed) carries a warning naming its status and
reason. Any text is safe: a name that cannot be a path (too long, odd bytes) is not a file.

``--img-size`` and ``--classes`` build a registry model at that size and number of classes; a
spec JSON or a run's trial fixes its own (both are part of its arch_id), and the three commands
refuse another value for it alike (:func:`resolve_model`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelTarget", "path_is", "resolve_model", "shown_name"]


@dataclass
class ModelTarget:
    """What MODEL named: a spec (FcaFormer) or a reference model, and the weights to use.

    ``kind`` says which form MODEL took: ``registry``, ``baseline``, ``text`` (spec JSON given as
    text), ``file`` (a spec JSON file) or ``run`` (``RUN_DIR:ARCH_ID``); only a ``registry`` spec
    was built at the ``img_size`` and ``num_classes`` asked for, the others carry their own (and
    :func:`resolve_model` refuses others for them).
    """

    label: str
    spec: Any = None  # ArchSpec
    baseline: str | None = None
    weights: Path | None = None
    note: str = ""  # printed when no --weights replace the run's missing ones
    kind: str = "registry"
    warning: str = ""  # printed whatever the weights (a trial the search did not complete)


def shown_name(name: str, limit: int = 60) -> str:
    """``name`` for a message: its repr, cut short when long (spec JSON text can be kilobytes)."""
    if len(name) <= limit:
        return repr(name)
    return f"{name[:limit]!r}... ({len(name)} characters)"


def path_is(path: Path, test: str) -> bool:
    """``path.is_file()`` / ``is_dir()``, False where the name cannot be a path at all (too long,
    a NUL byte, ...) instead of an OSError."""
    try:
        return bool(getattr(path, test)())
    except (OSError, ValueError):
        return False


def _spec_from_text(text: str, where: str) -> Any:
    from fcasearch.spec import ArchSpec, SpecError

    try:
        return ArchSpec.from_json(text)
    except (json.JSONDecodeError, SpecError, TypeError, ValueError) as exc:
        raise ValueError(f"{where} is not a valid spec JSON: {exc}") from None


def _from_run(run_dir: Path, arch_id: str) -> ModelTarget:
    from fcasearch.storage import RunDir, TrialLog

    rows = [r for r in TrialLog(RunDir(run_dir)).rows() if r.get("arch_id") == arch_id]
    if not rows:
        raise ValueError(f"{run_dir}:{arch_id}: no trial of arch_id {arch_id!r} in {run_dir}")
    row = next((r for r in rows if r.get("status") == "complete"), rows[0])
    spec = _spec_from_text(str(row.get("spec", "")), f"the spec logged for {arch_id}")
    label = f"{run_dir.name}:{arch_id}"
    warning = ""
    status = str(row.get("status") or "")
    if status != "complete":
        reason = " ".join(str(row.get("reason") or "").split()) or "no reason recorded"
        warning = (
            f"warning: {run_dir} recorded trial {row.get('trial', '?')} ({arch_id}) as "
            f"{status or 'of no status'}: {reason}; exporting it anyway"
        )
    weights = RunDir(run_dir).weights_file(arch_id)
    if weights.is_file():
        return ModelTarget(label, spec=spec, weights=weights, kind="run", warning=warning)
    return ModelTarget(
        label,
        spec=spec,
        kind="run",
        warning=warning,
        note=(
            f"warning: {run_dir} kept no weights for {arch_id} (search with --save-weights, or "
            "pass --weights): exporting freshly initialised weights"
        ),
    )


def _keep_own_input(target: ModelTarget, img_size: Any, num_classes: int | None) -> None:
    """Refuse ``--img-size`` or ``--classes`` other than the spec's own for a spec that fixes
    them (JSON, or a run's trial).

    The spec is the model: its input size and classes are part of its ``arch_id``, the token
    grids set the shapes of the attention biases, and a trial's saved weights fit no other.
    Building something else under the name given (the arch_id a row or file would carry), or
    silently at the spec's own size, would both mislead.
    """
    spec = target.spec
    if img_size is not None:
        side = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if side != tuple(spec.img_size):
            asked = str(img_size) if isinstance(img_size, int) else "x".join(map(str, side))
            own = "x".join(map(str, spec.img_size))
            raise _refused(target, "--img-size", asked, "img_size", "input size", own)
    if num_classes is not None and num_classes != spec.num_classes:
        own = str(spec.num_classes)
        raise _refused(target, "--classes", str(num_classes), "num_classes", "classes", own)


def _refused(
    target: ModelTarget, flag: str, asked: str, field: str, what: str, own: str
) -> ValueError:
    if target.kind == "run":
        why = (
            f"{target.label} is a trial of a search run, whose spec fixes its {what} at {own} "
            "(as it was searched and trained; its weights fit no other)"
        )
    else:
        why = (
            f"MODEL is a spec JSON, which fixes its {what} at {own} ({field} is part of its "
            f"arch_id {target.spec.arch_id}; change it in the JSON for another)"
        )
    return ValueError(
        f"{flag} {asked}: {why}; {flag} applies to registry and reference models only"
    )


def resolve_model(
    name: str, *, img_size: Any = None, num_classes: int | None = None
) -> ModelTarget:
    """Turn MODEL into a :class:`ModelTarget` (module docstring).

    Args:
        name: a registry name, a reference model, spec JSON text, the path of a spec JSON file, or
            ``RUN_DIR:ARCH_ID``. Any text is safe: one that cannot be a path (too long, odd bytes)
            is simply not a file.
        img_size: input side (or ``(H, W)``) a registry model is built at (default 224); a spec
            from JSON or a run fixes its own, and another is refused; reference models are built
            by the caller.
        num_classes: classifier outputs of a registry model (default: the registry's, 1000); a
            spec from JSON or a run fixes its own, and another is refused.

    Raises:
        ValueError: nothing matches, a file cannot be read, a spec is invalid, or ``img_size``
            or ``num_classes`` differ from those of a spec that fixes them (the message names
            the option, ``--img-size`` or ``--classes``).
    """
    from fcasearch.measure.baselines import list_baselines
    from fcasearch.models import get_spec, list_models

    key = name.strip()
    if key in list_models():
        kwargs: dict[str, Any] = {"img_size": 224 if img_size is None else img_size}
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        return ModelTarget(key, spec=get_spec(key, **kwargs))
    if key in list_baselines():
        return ModelTarget(key, baseline=key, kind="baseline")
    target = _spec_target(name)
    _keep_own_input(target, img_size, num_classes)
    return target


def _spec_target(name: str) -> ModelTarget:
    """MODEL as spec JSON (text or file) or ``RUN_DIR:ARCH_ID``."""
    from fcasearch.measure.baselines import list_baselines
    from fcasearch.models import list_models

    key = name.strip()
    if key.startswith("{"):
        return ModelTarget("spec", spec=_spec_from_text(key, "MODEL"), kind="text")
    path = Path(name)
    if path_is(path, "is_file") or path.suffix == ".json":
        if not path_is(path, "is_file"):
            raise ValueError(f"MODEL {shown_name(name)}: spec file {path} does not exist")
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"MODEL {shown_name(name)}: cannot read {path}: {exc}") from None
        return ModelTarget(path.stem, spec=_spec_from_text(text, str(path)), kind="file")
    run_dir, sep, arch_id = name.rpartition(":")
    if sep and run_dir and path_is(Path(run_dir), "is_dir"):
        return _from_run(Path(run_dir), arch_id)
    raise ValueError(
        f"MODEL {shown_name(name)} is not a registry model ({', '.join(list_models())}), a reference "
        f"model ({', '.join(list_baselines())}), a spec JSON file or text, or RUN_DIR:ARCH_ID of "
        "an existing run directory"
    )
