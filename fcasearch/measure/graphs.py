"""CUDA graph replay: a forward captured once and replayed without per-kernel launches.

At small batch sizes a GPU forward of an FcaFormer is bound by kernel launches (some 300 per
forward, each a few microseconds of CPU time), not by the GPU: on an H200, FcaFormer-L1 (fp32)
took 4.6 ms at batch 1 and 10.0 ms at batch 64, 64 times the images in about twice the time.
A deployment that cares about that latency replays a captured graph (TensorRT,
``torch.compile(mode="reduce-overhead")`` and serving stacks do), so the profile can time that
too (``measure_cost(..., cuda_graph=True)``, ``fcasearch profile --cuda-graph``, ``fcasearch
search --latency-cuda-graph``): on the same H200 the replay took 1.22 ms at batch 1 (CV 0.2%
against 12% launched).

A graph replays fixed kernels on fixed memory: the input tensor captured is the one every replay
reads, and the output tensor is overwritten by each replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["CAPTURE_WARMUP", "CudaGraphError", "capture_cuda_graph", "check_graph_device"]

CAPTURE_WARMUP = 3  # runs on a side stream before capture


class CudaGraphError(RuntimeError):
    """The forward could not be captured as a CUDA graph (the message says why and what to do)."""


def check_graph_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device`` if CUDA graphs can run there; ValueError otherwise."""
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(
            f"cuda_graph: CUDA graphs need a CUDA device, got {str(dev)!r}; measure on "
            "--device cuda, or without --cuda-graph"
        )
    return dev


def capture_cuda_graph(
    fn: Callable[[], torch.Tensor], device: torch.device | str, warmup: int = CAPTURE_WARMUP
) -> Callable[[], torch.Tensor]:
    """Capture ``fn()`` (a forward on fixed inputs) into a CUDA graph.

    Args:
        fn: the call to capture; it must not synchronise with the CPU or change shapes.
        device: the CUDA device it runs on.
        warmup: runs on a side stream before capture (lazy initialisation, cuBLAS workspaces and
            autotuning must happen outside the graph).

    Returns:
        ``replay()``: launches the whole graph and returns the output tensor the capture made
        (overwritten in place by every replay).

    Raises:
        ValueError: ``device`` is not a CUDA device.
        CudaGraphError: the capture failed (the cause is chained); out of memory propagates as
            it is, so that callers report it as such.
    """
    dev = check_graph_device(device)
    current = torch.cuda.current_stream(dev)
    side = torch.cuda.Stream(dev)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            out = fn()
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CudaGraphError(
            f"cuda_graph: the forward cannot be captured as a CUDA graph ({type(exc).__name__}: "
            f"{first}); it may synchronise with the CPU or allocate by shape; measure without "
            "--cuda-graph"
        ) from exc

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay
