"""A fused FcaFormer's whole eager forward as one kernel operator (``kernels/network.cpp``).

Where every part of a fused model runs as a kernel operator of ``kernels/block.cpp`` (the stem,
each ConvNeXt block, downsample and FcaFormer block) and its head on fcasearch's GEMM, the model's
forward runs them all from one operator, ``fcasearch_kernels.network``, instead of one Python
call each. Why: between two block operators the modules' Python ran for 130-280 us at batch 1 on
a 2-core AMD EPYC (each operator's arithmetic evicts the interpreter from cache, and the second
thread waits meanwhile): 1.7-2.0 ms of a 21 ms FcaFormer-L1 forward, against 0.42 ms for the
same Python run back to back. FcaFormer-L1 at batch 1, paired against the block operators called
one by one: 0.923-0.946 of the time (0.968 on a very busy host).

How: the first forward records, as the modules run, each operator they call and its arguments
(:class:`Recorder`, reached through :func:`recording`); the program is kept only if it holds
every part of the model in order and the network operator's output equals the modules' bit for
bit. Later forwards replay it while nothing it was made of changed: the same modules,
parameters and buffers, settings (``eps``, the fused-path switches, train/eval, hooks) and the
packed weights' sources (no new storage, no in-place edit). Otherwise, or under a dispatch mode,
a torch-function mode, global module hooks, ``torch.compile`` or TorchScript tracing, or for an
input the kernels do not serve, the modules run as before.
"""

from __future__ import annotations

import contextvars
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fcasearch.models import layers
from fcasearch.models.kernels import inference_input, kernels_loaded
from fcasearch.models.layers import args_cache, module_walk

__all__ = ["Recorder", "network_forward", "network_in_use", "recording"]

# step codes of kernels/network.cpp
STEM, CONVNEXT, DOWNSAMPLE, TOKENS, FCA, MAP, HEAD = range(1, 8)

# the module attributes that choose a module's path or enter its arguments: a change records the
# program again
_SWITCHES = (
    "training", "fast", "gemm", "block_kernel", "dw_kernel", "ln_kernel", "attn_impl", "eps",
)  # fmt: skip

_current: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "fcasearch_network_recorder", default=None
)


@dataclass
class _Step:
    code: int
    params: list
    settings: list[int]
    eps: list[float]


@dataclass
class Recorder:
    """The kernel operators one forward of a fused model called, in order (see the module
    docstring); the modules add to it while :func:`recording` returns it."""

    steps: list[_Step] = field(default_factory=list)
    sources: list[torch.Tensor] = field(default_factory=list)  # of packed weights

    def step(
        self,
        code: int,
        params: Sequence = (),
        settings: Sequence[int] = (),
        eps: Sequence[float] = (),
        sources: Sequence[torch.Tensor] = (),
    ) -> None:
        """Add one step: its code, parameters, settings and epsilons (as kernels/network.cpp
        takes them) and the weights its packed parameters were made from."""
        self.steps.append(_Step(code, list(params), [int(s) for s in settings], list(eps)))
        self.sources += sources

    def arguments(self) -> tuple[list, list[int], list[float]]:
        """The operator's parameters, program and epsilons."""
        params: list = []
        program: list[int] = []
        eps: list[float] = []
        for s in self.steps:
            params += s.params
            program += [s.code, *s.settings]
            eps += s.eps
        return params, program, eps


def recording() -> Recorder | None:
    """The recorder of the forward in progress, or None (no forward is being recorded)."""
    return _current.get()


def expected_codes(model: nn.Module) -> list[int]:
    """The step codes of ``model``'s forward when every part runs as one operator."""
    codes = [STEM]
    for stage in model.stages:
        fca = hasattr(stage, "sources")  # an FcaStage (a ConvStage has none)
        codes += (
            [TOKENS, *[FCA] * len(stage.blocks), MAP] if fca else [CONVNEXT] * len(stage.blocks)
        )
        if stage.downsample is not None:
            codes.append(DOWNSAMPLE)
    return [*codes, HEAD]


def _applies(x: torch.Tensor) -> bool:
    """Whether the network operator may serve ``x``: eager (not compiling), the kernels loaded,
    an input they serve, and nothing that watches the modules or the operators one by one."""
    return (
        kernels_loaded()
        and inference_input(x)
        and not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._is_torch_function_mode_enabled()
        and not nn.modules.module._global_forward_hooks
        and not nn.modules.module._global_forward_pre_hooks
    )


class _Watch:
    """What a program was made of, checked cheaply before each replay (a walk over the module
    tree with its settings compared took 155-270 us a call for FcaFormer-L1; this takes about a
    quarter of that): every entry of every module's parameter, buffer and child dicts, and its
    switches and ``eps``, compared by identity (a value assigned again counts as a change); no
    forward hooks on any module; the storage and version of the packed weights' sources."""

    def __init__(self, model: nn.Module, sources: Sequence[torch.Tensor]) -> None:
        self.dicts: list[dict] = []
        self.keys: list[str] = []
        self.values: list[object] = []
        self.hooks: list[dict] = []
        for _, d in module_walk(model):
            for part in (d["_parameters"], d["_buffers"], d["_modules"]):
                for key, value in part.items():
                    self._add(part, key, value)
            # the switches of the modules that choose a path (they have block_kernel), the eps
            # of the others (norms, whose eps enters the program)
            for key in _SWITCHES if "block_kernel" in d else ("eps",):
                if key in d:
                    self._add(d, key, d[key])
            self.hooks += (d["_forward_hooks"], d["_forward_pre_hooks"])
        # inference tensors have no version counter: only new storage counts for them
        self.sources = tuple(t for t in sources if not t.is_inference())
        self.frozen = tuple(t for t in sources if t.is_inference())
        self.versions = _versions(self.sources, self.frozen)

    def _add(self, d: dict, key: str, value: object) -> None:
        self.dicts.append(d)
        self.keys.append(key)
        self.values.append(value)

    def unchanged(self) -> bool:
        """Whether everything is as it was when the program was recorded."""
        return (
            all(map(operator.is_, map(dict.get, self.dicts, self.keys), self.values))
            and not any(self.hooks)
            and _versions(self.sources, self.frozen) == self.versions
        )


def _versions(sources: tuple[torch.Tensor, ...], frozen: tuple[torch.Tensor, ...]) -> list[int]:
    """The storage and version of each of ``sources``, and the storage of each of ``frozen``."""
    return [*(t.data_ptr() for t in sources + frozen), *(t._version for t in sources)]


def _record(model: nn.Module, x: torch.Tensor) -> tuple[tuple | None, _Watch, torch.Tensor]:
    """One forward of the modules, recorded: the operator's arguments if the program is whole
    and equal (else None), what they were made of, and the output."""
    rec = Recorder()
    token = _current.set(rec)
    try:
        out = model.forward_head(model.forward_features(x))
    finally:
        _current.reset(token)
    kept = None
    hooks = any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    if not hooks and [s.code for s in rec.steps] == expected_codes(model):
        args = rec.arguments()
        try:
            same = torch.equal(torch.ops.fcasearch_kernels.network(x, *args), out)
        except RuntimeError:  # a program the operator refuses: the modules keep running
            same = False
        if same:
            kept = args
    return kept, _Watch(model, rec.sources), out


def network_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s forward (an :class:`~fcasearch.models.fcaformer.FcaFormer`): through the
    network operator where it applies (see the module docstring), else through the modules."""
    if not _applies(x):
        return model.forward_head(model.forward_features(x))
    cache = args_cache(model)
    key = ("network", tuple(x.shape), x.stride(), layers.MLP_CHUNK_ELEMENTS)
    entry = cache.entries.get(key)
    if entry is not None and entry[0].unchanged():
        args = entry[1]
        if args is None:  # no program for this model: the modules run
            return model.forward_head(model.forward_features(x))
        return torch.ops.fcasearch_kernels.network(x, *args)
    args, watch, out = _record(model, x)
    cache.entries[key] = (watch, args)
    return out


def network_in_use(model: nn.Module) -> bool:
    """Whether a recorded forward of ``model`` gave a program, which its eager forwards of that
    input shape then run as the network operator (while nothing it was made of changes)."""
    cache = model.__dict__.get("_args_cache")
    return cache is not None and any(
        isinstance(key, tuple) and key[:1] == ("network",) and entry[1] is not None
        for key, entry in cache.entries.items()
    )
