"""Search-space files: YAML (or a dict) into a typed, strictly validated :class:`SpaceDef`.

The format is documented in ``search_spaces/README.md``. Validation is strict so that every
combination the sampler can draw builds: an unknown key (with a close match), a wrong type, an
empty choice, a range with low > high, heads that do not divide every width choice, a TME index
beyond some depth choice... each raises :class:`SpaceError` naming the file, the key path and the
fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fcasearch.space.choices import RULES, Choice, parse_choice
from fcasearch.space.constraints import Constraints
from fcasearch.space.errors import SpaceError, did_you_mean
from fcasearch.spec import ArchSpec, StageSpec

__all__ = [
    "CROSS_KEYS",
    "FCA_KEYS",
    "STAGE_KEYS",
    "SpaceDef",
    "StageChoices",
    "parse_space",
]

# keys of every stage / of FcaFormer stages only / of FcaFormer stages that emit cross tokens
COMMON_KEYS = ("depth", "width", "mlp_ratio")
FCA_KEYS = ("heads", "head_dim", "tme", "enhancement")
CROSS_KEYS = ("merge_stride", "cross_window", "scale_factors", "cross_bias")
STAGE_KEYS = COMMON_KEYS + FCA_KEYS + CROSS_KEYS
TOP_KEYS = (
    "name",
    "description",
    "img_size",
    "in_chans",
    "num_classes",
    "drop_path_rate",
    "layer_scale_init",
    "conv_stages",
    "stages",
    "defaults",
    "share",
    "constraints",
)
# the StageSpec defaults, used when neither the stage nor ``defaults`` sets a key
BUILTIN: dict[str, Any] = {
    "mlp_ratio": 4.0,
    "tme": "all_but_last",
    "enhancement": True,
    "merge_stride": 4,
    "cross_window": 12,
    "scale_factors": True,
    "cross_bias": True,
}


@dataclass(frozen=True)
class StageChoices:
    """The resolved choices of one stage (its own keys, else ``defaults``, else built-ins).

    Attributes:
        index: the stage's position (0-based).
        choices: key -> Choice; fca keys are present only when the stage may be an fca stage, and
            exactly one of ``heads`` / ``head_dim`` then.
        may_be_conv: some ``conv_stages`` choice makes this a ConvNeXt stage.
        may_be_fca: some ``conv_stages`` choice makes this an FcaFormer stage.
    """

    index: int
    choices: Mapping[str, Choice]
    may_be_conv: bool
    may_be_fca: bool

    @property
    def heads_key(self) -> str | None:
        """``"heads"`` or ``"head_dim"`` (whichever this stage searches), None if never fca."""
        return next((k for k in ("heads", "head_dim") if k in self.choices), None)


@dataclass(frozen=True)
class SpaceDef:
    """A validated search-space definition (what a space file says, typed).

    Attributes:
        name: the space's name (the file stem unless ``name:`` is given).
        source: where it came from (file name or ``<dict>``), used in error messages.
        img_size: square input side choices.
        conv_stages: hybrid split choices (how many leading stages are ConvNeXt stages).
        stages: the per-stage choices.
        share: the shared keys (in file order) and their choices (from ``defaults``): each is
            sampled once for all stages where it applies (one sampler parameter, named by the key).
        raw: the mapping as loaded.
    """

    name: str
    description: str
    source: str
    img_size: Choice
    in_chans: int
    num_classes: int
    drop_path_rate: float
    layer_scale_init: float
    conv_stages: Choice
    stages: tuple[StageChoices, ...]
    share: Mapping[str, Choice]
    constraints: Constraints
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def spec(self, stages: tuple[StageSpec, ...], img: int) -> ArchSpec:
        """The network of these stages at input side ``img``, with the space's fixed settings."""
        return ArchSpec(
            stages,
            (img, img),
            self.in_chans,
            self.num_classes,
            self.drop_path_rate,
            self.layer_scale_init,
        )


def parse_space(data: Any, *, source: str, name: str | None = None) -> SpaceDef:
    """Validate a loaded space file and resolve it into a :class:`SpaceDef`.

    Args:
        data: the mapping from ``yaml.safe_load`` (or built in code).
        source: the file name (or ``<dict>``) to name in error messages.
        name: the default name (the file stem) when the data gives none.

    Raises:
        SpaceError: for anything the format does not allow (the message says how to fix it).
    """

    def fail(path: str, message: str) -> SpaceError:
        return SpaceError(message, source=source, path=path)

    if not isinstance(data, Mapping):
        raise SpaceError(
            f"expected a mapping at the top level, got {type(data).__name__}", source=source
        )
    _no_unknown(data, TOP_KEYS, "", source)
    for key, example in (
        ("stages", "a list of stages"),
        ("img_size", "224"),
        ("num_classes", "1000"),
        ("conv_stages", "[1, 2]"),
    ):
        if key not in data:
            raise fail(key, f"missing; add {key}: {example}")
    raw_stages = data["stages"]
    if not isinstance(raw_stages, list) or not raw_stages:
        raise fail("stages", f"expected a non-empty list of stage mappings, got {raw_stages!r}")
    n = len(raw_stages)

    conv = parse_choice(
        data["conv_stages"], RULES["conv_stages"], source=source, path="conv_stages"
    )
    for k in conv.values:
        if k > n:
            raise fail(
                "conv_stages", f"{k} is more than the {n} stages listed; use values in 0..{n}"
            )
    img = parse_choice(data["img_size"], RULES["img_size"], source=source, path="img_size")
    mult = 2 ** (n + 1)
    for side in img.values:
        if side % mult:
            raise fail(
                "img_size",
                f"{side} is not a multiple of {mult} (stride-4 stem, then /2 per stage, {n} stages); "
                f"use e.g. {max(mult, round(side / mult) * mult)}",
            )
    fixed = {
        "in_chans": _fixed_int(data.get("in_chans", 3), "in_chans", source),
        "num_classes": _fixed_int(data["num_classes"], "num_classes", source),
    }
    drop = data.get("drop_path_rate", 0.0)
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop < 1:
        raise fail(
            "drop_path_rate",
            f"{drop!r} must be one number in [0, 1) (a training setting, not searched)",
        )
    scale = data.get("layer_scale_init", 1e-6)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise fail("layer_scale_init", f"{scale!r} must be one number > 0 (not searched)")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise fail(key, f"{data[key]!r} must be a string")

    defaults_raw = data.get("defaults") or {}
    if not isinstance(defaults_raw, Mapping):
        raise fail(
            "defaults", f"expected a mapping of stage keys, got {type(defaults_raw).__name__}"
        )
    _no_unknown(defaults_raw, STAGE_KEYS, "defaults", source)
    _not_both_heads(defaults_raw, "defaults", source)
    defaults = {
        k: parse_choice(v, RULES[k], source=source, path=f"defaults.{k}")
        for k, v in defaults_raw.items()
    }
    share = _parse_share(data.get("share") or [], defaults, source)

    first_fca = min(conv.values)  # stages from here on may be fca
    stages = []
    for i, raw in enumerate(raw_stages):
        stages.append(_parse_stage(i, raw, defaults, share, conv, first_fca, source))
    _check_combinations(stages, source)
    constraints = Constraints.from_dict(data.get("constraints"), source=source)
    return SpaceDef(
        name=data.get("name") or name or source,
        description=data.get("description", ""),
        source=source,
        img_size=img,
        in_chans=fixed["in_chans"],
        num_classes=fixed["num_classes"],
        drop_path_rate=float(drop),
        layer_scale_init=float(scale),
        conv_stages=conv,
        stages=tuple(stages),
        share={k: defaults[k] for k in share},
        constraints=constraints,
        raw=dict(data),
    )


def _no_unknown(data: Mapping[str, Any], allowed: tuple[str, ...], path: str, source: str) -> None:
    for key in data:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise SpaceError(
                f"unknown key{did_you_mean(key, allowed)}; allowed here: {', '.join(allowed)}",
                source=source,
                path=where,
            )


def _not_both_heads(data: Mapping[str, Any], path: str, source: str) -> None:
    if "heads" in data and "head_dim" in data:
        raise SpaceError(
            "both heads and head_dim are set; keep one (head_dim gives heads = width / head_dim)",
            source=source,
            path=f"{path}.heads" if path else "heads",
        )


def _fixed_int(value: Any, key: str, source: str) -> int:
    if isinstance(value, list):
        raise SpaceError(
            f"{value!r}: {key} is fixed by the dataset, not searched; give one integer",
            source=source,
            path=key,
        )
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpaceError(
            f"{value!r} ({type(value).__name__}) must be an integer >= 1", source=source, path=key
        )
    return value


def _parse_share(raw: Any, defaults: Mapping[str, Choice], source: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise SpaceError(f"expected a list of stage keys, got {raw!r}", source=source, path="share")
    for i, key in enumerate(raw):
        where = f"share[{i}]"
        if key not in STAGE_KEYS:
            raise SpaceError(
                f"{key!r} is not a stage key{did_you_mean(key, STAGE_KEYS)}; shareable: {', '.join(STAGE_KEYS)}",
                source=source,
                path=where,
            )
        if key in raw[:i]:
            raise SpaceError(f"{key!r} is listed twice; list it once", source=source, path=where)
        if key not in defaults:
            raise SpaceError(
                f"{key!r} is shared but defaults sets no {key}; add defaults.{key} (the one set of "
                "choices every stage draws the same value from)",
                source=source,
                path=where,
            )
    return list(raw)


def _parse_stage(
    i: int,
    raw: Any,
    defaults: Mapping[str, Choice],
    share: list[str],
    conv: Choice,
    first_fca: int,
    source: str,
) -> StageChoices:
    path = f"stages[{i}]"
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpaceError(f"expected a mapping of stage keys, got {raw!r}", source=source, path=path)
    _no_unknown(raw, STAGE_KEYS, path, source)
    _not_both_heads(raw, path, source)
    may_be_fca = i >= first_fca
    may_be_conv = any(i < k for k in conv.values)
    for key in raw:
        if key in share:
            raise SpaceError(
                f"{key} is shared (share: [{', '.join(share)}]) so only defaults.{key} sets it; "
                f"remove it here, or remove {key} from share",
                source=source,
                path=f"{path}.{key}",
            )
        if key not in COMMON_KEYS and not may_be_fca:
            raise SpaceError(
                f"stage {i} is never an fca stage (conv_stages >= {first_fca}), so {key} cannot "
                f"apply; remove it, or allow conv_stages <= {i}",
                source=source,
                path=f"{path}.{key}",
            )
    own = {k: parse_choice(v, RULES[k], source=source, path=f"{path}.{k}") for k, v in raw.items()}
    choices: dict[str, Choice] = {}
    wanted = COMMON_KEYS + (FCA_KEYS + CROSS_KEYS if may_be_fca else ())
    for key in wanted:
        if key == "head_dim":
            continue
        if key == "heads":  # one slot: heads or head_dim, the stage's own over defaults
            level = own if ("heads" in own or "head_dim" in own) else defaults
            found = next((k for k in ("heads", "head_dim") if k in level), None)
            if found is None:
                raise SpaceError(
                    f"stage {i} may be an fca stage but sets no heads; add heads or head_dim "
                    "here or in defaults (head_dim: 32 is the paper's)",
                    source=source,
                    path=f"{path}.heads",
                )
            choices[found] = level[found]
        elif key in own:
            choices[key] = own[key]
        elif key in defaults:
            choices[key] = defaults[key]
        elif key in BUILTIN:
            choices[key] = Choice((BUILTIN[key],), "")
        else:
            raise SpaceError(
                f"missing; set {key} here or in defaults", source=source, path=f"{path}.{key}"
            )
    return StageChoices(i, choices, may_be_conv, may_be_fca)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _check_combinations(stages: list[StageChoices], source: str) -> None:
    """Checks across keys, so that every combination the sampler draws builds."""
    for st in stages:
        ch = st.choices
        widths = list(ch["width"].values)
        common = math.gcd(*widths)
        if st.index == 0 and any(w % 2 for w in widths):
            odd = next(w for w in widths if w % 2)
            raise SpaceError(
                f"{odd} is odd; stage 0 widths must be even (the stem's first conv has width/2 channels)",
                source=source,
                path=ch["width"].path or "stages[0].width",
            )
        low_ratio = min(ch["mlp_ratio"].values)
        if round(min(widths) * low_ratio) < 1:
            raise SpaceError(
                f"{low_ratio:g} gives an MLP with no hidden units at width {min(widths)}; use a "
                f"ratio > {0.5 / min(widths):g}",
                source=source,
                path=ch["mlp_ratio"].path or f"stages[{st.index}].mlp_ratio",
            )
        if not st.may_be_fca:
            continue
        key = st.heads_key
        where = ch[key].path
        for value in ch[key].values:
            bad = [w for w in widths if w % value]
            if not bad:
                continue
            if key == "heads":
                fix = (
                    f"every heads choice must divide every width choice of the stage (the sampler "
                    f"offers one fixed list); use heads among {_divisors(common)} (the common "
                    "divisors of the widths), or head_dim instead of heads"
                )
            else:
                fix = (
                    f"head_dim must divide every width choice (heads = width / head_dim); make "
                    f"the widths multiples of {value}, or use head_dim among {_divisors(common)}"
                )
            raise SpaceError(
                f"{value} does not divide width {bad[0]} (stage {st.index}); {fix}",
                source=source,
                path=where,
            )
        min_depth = min(ch["depth"].values)
        for value in ch["tme"].values:
            if isinstance(value, tuple) and value and max(value) >= min_depth - 1:
                allowed = (
                    f"allowed indices 0..{min_depth - 2}" if min_depth > 1 else "no block may emit"
                )
                raise SpaceError(
                    f"block {max(value)} cannot emit cross tokens at depth {min_depth} of stage "
                    f"{st.index} (the last block never emits; {allowed}); "
                    f"raise the stage's smallest depth to {max(value) + 2}, or drop the index",
                    source=source,
                    path=ch["tme"].path or f"stages[{st.index}].tme",
                )
