"""``onnxruntime``: export with ``torch.onnx``, run in an ONNX Runtime ``InferenceSession``.

Exporters (``torch.onnx.export``):

* ``dynamo``: the ``torch.export``-based exporter, PyTorch's supported path since 2.9; needs the
  ``onnxscript`` package. The default of ``fcasearch export`` (the file a user deploys). Tested
  here on FcaFormer L1 (max abs diff vs eager 1.8e-6), members of every shipped search space,
  ConvNeXt-T, Swin-T and a DeiT-S-sized ViT.
* ``torchscript``: the tracing exporter (``dynamo=False``), deprecated by PyTorch but still in
  torch 2.14, and about 20x faster: a ``micro`` member exported in 0.09 s (median of 4; 0.09-0.12)
  against 1.8 s (1.5-1.9) on an idle 2-core AMD EPYC, where the member's whole 2-epoch trial
  trains in about 1 s. Its default opset here is 20
  (:data:`TORCHSCRIPT_OPSET`), which has ``Gelu`` as one node where opset 18 writes five.
  ``nn.MultiheadAttention`` (torchvision's ViT) is traced on its composite path, which exports
  (:func:`_traceable_attention`).
* ``auto`` (the runtime's default, for measurement): ``torchscript``, falling back to ``dynamo``
  where this torch has no tracing exporter or it fails on the model. The two exports ran within
  noise of each other in ONNX Runtime (FcaFormer L1 batch 1 and a ``micro`` member, interleaved:
  0.96-1.1x), and each is checked against eager, so the search may take the fast one.

For measurement (:class:`OnnxRuntime`), FcaFormer blocks are exported with their attention as the
formula (``attn_impl="explicit"``): the tracing exporter writes SDPA as the same MatMul, Add,
Softmax, MatMul chain plus nodes that compute the scale from the input's shape, so the formula
gives the same computation in fewer nodes, and the export time grows with the node count. The
session's outputs are still checked against eager with SDPA.

Thread pools do not spin: ONNX Runtime's default keeps idle pool threads busy-waiting after each
run, and that took the cores from whatever ran next. Measured on a 2-core AMD EPYC (FcaFormer-L1,
batch 1, 2 threads): a torch forward timed right after a session's run took 125 ms against 59 ms
after a session without spinning, while the session itself gained 4% (39.0 against 40.5 ms); after
one run, the spinning threads burnt about 64 ms of CPU in a 100 ms pause. Runtimes timed side by
side (``fcasearch profile --runtime eager,onnxruntime``), final rounds of several sessions and
trials training beside a measurement all ran next to such threads.

Execution providers: the CPU provider on a CPU device (``intra_op_num_threads`` set to torch's
thread count at preparation, so both runtimes use the same threads); on CUDA the CUDA provider
(``onnxruntime-gpu``), and TensorRT's where asked for with ``providers=``. A session that did not
get the provider asked for is an error, never a silent fall back to the CPU.

Every export is checked: the session's outputs on the example input and on its negation against
the eager folded model's, max abs diff reported (tolerance in
:func:`fcasearch.runtime.base.tolerance`); the second input catches a trace that baked in a
branch taken on the values of the example.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcasearch.models import attention_impl
from fcasearch.nativeio import native_output_held
from fcasearch.runtime.base import (
    Exclusive,
    Prepared,
    Runtime,
    RuntimeUnavailable,
    UnsupportedModel,
    check_outputs,
    eager_reference,
)
from fcasearch.runtime.errors import error_summary, first_line

__all__ = [
    "EXPORTERS",
    "OnnxExport",
    "OnnxRuntime",
    "export_onnx",
    "onnx_session",
    "verify_onnx",
]

EXPORTERS = ("dynamo", "torchscript")  # what export_onnx takes; the runtime also takes "auto"
TORCHSCRIPT_OPSET = 20  # the tracing exporter's opset unless one is asked for (module docstring)
INPUT_NAME, OUTPUT_NAME = "images", "logits"
_INSTALL = "pip install onnx onnxruntime onnxscript"
_NUMPY_DTYPES = {torch.float32: "float32", torch.float16: "float16"}


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeUnavailable(
            f"runtime 'onnxruntime' needs the Python package(s) {', '.join(missing)}, which are "
            f"not installed; install them with `{_INSTALL}`"
        )


@dataclass(frozen=True)
class OnnxExport:
    """An exported ONNX file.

    Attributes:
        path: the ``.onnx`` file (weights inside it).
        exporter: ``dynamo`` or ``torchscript``.
        opset: the default-domain opset of the graph.
        seconds: export time, s.
    """

    path: Path
    exporter: str
    opset: int
    seconds: float


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Mute the exporters' warnings and the ONNX optimizer's log lines for a moment."""
    loggers = [
        logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _traceable_attention() -> Iterator[None]:
    """Run ``nn.MultiheadAttention`` on its composite path for a moment.

    In inference (no grad, eval) the module calls one fused op, which the tracing exporter cannot
    convert (``aten::_native_multi_head_attention``): torchvision's ViT, DeiT-S-like among the
    reference models, failed the export and cost a 3.5 s dynamo export instead (32 px, 2-core AMD
    EPYC). The composite path computes the same attention in ops that export; the check against
    eager (which keeps the fused op) still compares them.
    """
    mha = torch.backends.mha
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    exporter: str = "dynamo",
    opset: int | None = None,
    dynamic_batch: bool = False,
) -> OnnxExport:
    """Export ``model`` (as it is: fold it first for the deployable form) to one ONNX file.

    Args:
        model: the module, in eval mode.
        example: an input batch; fixes the traced shapes (all of them unless ``dynamic_batch``).
        path: the ``.onnx`` file to write (its folder is created).
        exporter: ``dynamo`` (default) or ``torchscript`` (module docstring).
        opset: ONNX opset to target; None takes the exporter's default.
        dynamic_batch: leave the batch dimension of input and output free. The model is then
            traced on a batch of at least 2 (the example repeated), and a file whose batch came
            out fixed all the same is an error. Check the file at two
            batch sizes, 1 among them (:func:`verify_onnx`): an exporter can write a free batch
            dimension on a graph that holds the traced one elsewhere.

    Raises:
        RuntimeUnavailable: ``onnx`` (or ``onnxscript`` for the dynamo exporter) is missing.
        UnsupportedModel: ``dynamic_batch``, and the exporter fixed the batch.
        ValueError: an unknown exporter.
        Exception: whatever the exporter raised for a model it cannot export.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter: {exporter!r} is not one of {', '.join(EXPORTERS)}")
    _require("onnx", *(("onnxscript",) if exporter == "dynamo" else ()))
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = example.detach().clone()  # an ordinary tensor even if made under inference_mode
    if dynamic_batch and x.shape[0] < 2:
        # torch.export takes a dimension of size 1 for a constant (and writes the batch into
        # the graph): traced on 2, the example twice
        x = x.repeat(2, *([1] * (x.dim() - 1)))
    kwargs: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "opset_version": opset,
    }
    started = time.perf_counter()
    with _quiet(), torch.no_grad():
        if exporter == "dynamo":
            if dynamic_batch:
                # an axis name: torch.onnx exports it as torch.export.Dim.DYNAMIC (an error if
                # the model fixes it) and names the dimension in the file
                kwargs["dynamic_shapes"] = ({0: "batch"},)
            torch.onnx.export(
                model, (x,), path, dynamo=True, external_data=False, verbose=False, **kwargs
            )
        else:
            if dynamic_batch:
                kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
            kwargs["opset_version"] = opset or TORCHSCRIPT_OPSET
            # its C++ side prints the whole graph to stdout when a conversion fails (100 KB for a
            # small ViT, whatever verbose says; the failure itself is reported): held back
            with _traceable_attention(), native_output_held(1, pass_on_success=True):
                torch.onnx.export(model, (x,), path, dynamo=False, **kwargs)
    seconds = time.perf_counter() - started
    graph = onnx.load(str(path), load_external_data=False)
    if dynamic_batch:
        (images,) = [i for i in graph.graph.input if i.name == INPUT_NAME]
        batch = images.type.tensor_type.shape.dim[0]
        if not batch.dim_param:
            raise UnsupportedModel(
                f"the {exporter} exporter fixed the batch of {path.name} at {batch.dim_value} "
                "although a free batch was asked for"
            )
    version = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxExport(path=path, exporter=exporter, opset=int(version), seconds=seconds)


def _default_providers(device: torch.device) -> list[str]:
    return ["CPUExecutionProvider"] if device.type == "cpu" else ["CUDAExecutionProvider"]


def _check_providers(device: torch.device, providers: Sequence[str]) -> None:
    _require("onnx", "onnxruntime")
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        fix = (
            "install onnxruntime-gpu (matching your CUDA) instead of onnxruntime"
            if device.type == "cuda"
            else "pass providers available in this build"
        )
        raise RuntimeUnavailable(
            f"runtime 'onnxruntime' on {device}: execution provider(s) {', '.join(missing)} are "
            f"not in this onnxruntime build (it has {', '.join(available)}); {fix}"
        )


def onnx_session(
    model: str | Path | bytes,
    device: str | torch.device = "cpu",
    *,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model`` (a file or its bytes) on ``device``.

    Args:
        model: ``.onnx`` path or serialized model.
        device: ``cpu`` or ``cuda[:N]``.
        threads: intra-op threads on CPU (None: torch's current thread count).
        providers: execution providers in order of preference (default: the device's own).

    Raises:
        RuntimeUnavailable: onnxruntime, or a provider asked for, is missing or did not load.
    """
    dev = torch.device(device)
    chosen = list(providers) if providers else _default_providers(dev)
    _check_providers(dev, chosen)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    # idle pool threads sleep instead of spinning (module docstring: they took the cores from
    # whatever ran next, a torch forward timed beside the session among others)
    for pool in ("intra_op", "inter_op"):
        opts.add_session_config_entry(f"session.{pool}.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only
    provider_list: list[Any] = list(chosen)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        provider_list = [
            (p, {"device_id": index})
            if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
            else p
            for p in chosen
        ]
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, sess_options=opts, providers=provider_list)
    loaded = session.get_providers()
    if chosen[0] not in loaded:
        raise RuntimeUnavailable(
            f"runtime 'onnxruntime': the session did not load {chosen[0]} (it runs on "
            f"{', '.join(loaded)}); check that the CUDA/TensorRT libraries onnxruntime-gpu needs "
            "are installed"
        )
    return session


def _runner(session: Any, example: torch.Tensor, out_shape: tuple[int, ...]):
    """``forward(x)`` and the timed ``run()`` of a session for inputs shaped like ``example``."""
    dev = example.device
    np_dtype = _NUMPY_DTYPES.get(example.dtype)
    if np_dtype is None:
        raise UnsupportedModel(
            f"onnxruntime: inputs of {example.dtype} cannot be passed to ONNX Runtime from "
            "torch here; use fp32 or fp16"
        )
    if dev.type == "cpu":

        def forward(x: torch.Tensor) -> torch.Tensor:
            out = session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().contiguous().numpy()})[0]
            return torch.from_numpy(out)

        feed = {INPUT_NAME: example.detach().contiguous().numpy()}  # converted once
        return forward, lambda: session.run([OUTPUT_NAME], feed)

    import numpy as np

    index = dev.index if dev.index is not None else torch.cuda.current_device()

    def bind(x: torch.Tensor, out: torch.Tensor) -> Any:
        binding = session.io_binding()
        for name, t in ((INPUT_NAME, x), (OUTPUT_NAME, out)):
            add = binding.bind_input if name == INPUT_NAME else binding.bind_output
            add(
                name=name,
                device_type="cuda",
                device_id=index,
                element_type=np.dtype(np_dtype),
                shape=tuple(t.shape),
                buffer_ptr=t.data_ptr(),
            )
        return binding

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().contiguous()
        out = torch.empty((x.shape[0], *out_shape[1:]), dtype=x.dtype, device=dev)
        torch.cuda.synchronize(dev)  # the input is written by torch's stream
        session.run_with_iobinding(bind(x, out))
        return out

    x0 = example.detach().contiguous()
    out0 = torch.empty(out_shape, dtype=example.dtype, device=dev)
    binding0 = bind(x0, out0)
    torch.cuda.synchronize(dev)
    return forward, lambda: session.run_with_iobinding(binding0)


def _check_inputs(
    model: nn.Module, example: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """What an ONNX file is checked on: ``(input, eager's output, label)`` for the example and its
    negation (a trace that baked in a branch taken on the example's values shows on the second)."""
    inputs = ((example, "onnxruntime"), (-example, "onnxruntime (negated input)"))
    return [(x, eager_reference(model, x), what) for x, what in inputs]


def _compared(got: Sequence[torch.Tensor], checks: list[tuple[Any, torch.Tensor, str]]) -> float:
    """The largest difference of the session's outputs ``got`` from :func:`_check_inputs`'
    references (:func:`check_outputs` on each)."""
    return max(check_outputs(g, ref, what) for g, (_, ref, what) in zip(got, checks))


def verify_onnx(
    path: str | Path,
    model: nn.Module,
    example: torch.Tensor,
    *,
    providers: Sequence[str] | None = None,
) -> float:
    """Run the ONNX file in ONNX Runtime on ``example`` and on its negation and compare with
    ``model`` in eager mode.

    Returns:
        The max abs difference (within tolerance).

    Raises:
        UnsupportedModel: the outputs differ beyond tolerance, or the session cannot run it.
        RuntimeUnavailable: onnxruntime or a provider is missing.
    """
    checks = _check_inputs(model, example)
    try:
        session = onnx_session(Path(path), example.device, providers=providers)
        forward, _ = _runner(session, example, tuple(checks[0][1].shape))
        got = [forward(x) for x, _, _ in checks]
    except (RuntimeUnavailable, UnsupportedModel):
        raise
    except Exception as exc:  # onnxruntime's own errors (Fail, InvalidGraph, NotImplemented)
        text = error_summary(exc)
        raise UnsupportedModel(f"onnxruntime cannot run {Path(path).name}: {text}") from exc
    return _compared(got, checks)


class OnnxRuntime(Runtime):
    """Export with ``torch.onnx``, run in ONNX Runtime (module docstring).

    Args:
        exporter: ``auto`` (default: torchscript, else dynamo), ``dynamo`` or ``torchscript``.
        opset: ONNX opset (None: the exporter's default).
        providers: execution providers, in order of preference, or one by name (default: CPU on
            a CPU device, CUDA on a GPU).
    """

    name = "onnxruntime"
    install_hint = _INSTALL

    def __init__(
        self,
        *,
        exporter: str = "auto",
        opset: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        if exporter not in ("auto", *EXPORTERS):
            raise ValueError(f"exporter: {exporter!r} is not one of auto, {', '.join(EXPORTERS)}")
        self.exporter, self.opset = exporter, opset
        if opset is not None and (
            isinstance(opset, bool) or not isinstance(opset, int) or opset < 7
        ):
            raise ValueError(f"opset: {opset!r} is not an ONNX opset number (e.g. 18)")
        if isinstance(providers, str):
            providers = [providers]  # one provider by name, not a sequence of letters
        if providers is not None and (
            not isinstance(providers, (list, tuple))
            or not all(isinstance(p, str) and p for p in providers)
        ):
            raise ValueError(f"providers: {providers!r} are not execution provider names")
        self.providers = list(providers) if providers else None

    @property
    def version(self) -> str:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime (not installed)"
        return f"onnxruntime {ort.__version__}"

    def check(self, device: str | torch.device = "cpu") -> None:
        dev = torch.device(device)
        _require("onnx", "onnxruntime", *(("onnxscript",) if self.exporter == "dynamo" else ()))
        _check_providers(dev, self.providers or _default_providers(dev))

    def _export(self, model: nn.Module, example: torch.Tensor, tmp: Path) -> OnnxExport:
        """Export with the chosen exporter; ``auto`` tries torchscript, then dynamo."""
        order = ["torchscript", "dynamo"] if self.exporter == "auto" else [self.exporter]
        if self.exporter == "auto" and importlib.util.find_spec("onnxscript") is None:
            order = ["torchscript"]
        failures = []
        for exporter in order:
            try:
                # FcaFormer attention as the formula (the check compares with eager's SDPA)
                out = tmp / f"{exporter}.onnx"
                with attention_impl(model, "explicit"):
                    return export_onnx(model, example, out, exporter=exporter, opset=self.opset)
            except (RuntimeUnavailable, ValueError):
                raise
            except Exception as exc:  # the exporters raise many types
                failures.append(f"{exporter}: {first_line(exc)}")
        raise UnsupportedModel(f"onnxruntime: torch.onnx export failed ({'; '.join(failures)})")

    def _prepare(
        self, model: nn.Module, example: torch.Tensor, note: str, exclusive: Exclusive
    ) -> Prepared:
        checks = _check_inputs(model, example)
        with tempfile.TemporaryDirectory(prefix="fcasearch-onnx-") as tmp:
            info = self._export(model, example, Path(tmp))
            data = info.path.read_bytes()
        # TensorRT's execution provider times tactics as it builds its engine (on the first run)
        tactics = "TensorrtExecutionProvider" in (self.providers or ())
        try:
            with exclusive() if tactics else contextlib.nullcontext():
                started = time.perf_counter()  # not counting a wait for the device
                session = onnx_session(data, example.device, providers=self.providers)
                forward, run = _runner(session, example, tuple(checks[0][1].shape))
                got = [forward(x) for x, _, _ in checks]
        except (RuntimeUnavailable, UnsupportedModel):
            raise
        except Exception as exc:
            raise UnsupportedModel(f"onnxruntime: the session failed: {first_line(exc)}") from exc
        session_seconds = time.perf_counter() - started
        diff = _compared(got, checks)
        threads = session.get_session_options().intra_op_num_threads
        where = f"{threads} intra-op threads" if example.device.type == "cpu" else "I/O binding"
        return Prepared(
            runtime=self.name,
            version=self.version,
            note=(
                f"ONNX Runtime InferenceSession ({', '.join(session.get_providers())}, {where}, "
                f"graph optimizations all, idle threads sleep) of the {note}, exported by torch.onnx "
                f"({info.exporter} exporter{' (auto)' if self.exporter == 'auto' else ''}, opset "
                f"{info.opset}, static shape {tuple(example.shape)}) in "
                f"{info.seconds:.1f} s, session {session_seconds:.2f} s; max abs diff vs eager "
                f"{diff:.2g}"
            ),
            forward=forward,
            run=run,
            example=example,
            max_abs_diff=diff,
            steps={"export": info.seconds, "session": session_seconds},
        )

    def __repr__(self) -> str:
        return f"OnnxRuntime(exporter={self.exporter!r}, providers={self.providers!r})"
