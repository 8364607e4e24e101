"""Peak memory of a piece of work: inference of a batch, or one training step.

Both devices report the same quantity: the bytes resident when the work starts (weights, buffers,
optimizer state, inputs: summed from the tensors themselves) plus the peak of what the work
allocates on top of them.

* CUDA: ``torch.cuda.reset_peak_memory_stats``, then ``max_memory_allocated`` minus the
  allocation before the work (the caching allocator's reserve is not counted).
* CPU: torch's profiler with ``profile_memory=True`` records every CPU allocation and free; the
  running sum of those deltas, in time order, peaks at the work's transient peak. (An in-process
  RSS delta is unreliable: the C allocator keeps freed pages.) The profiler's native library logs
  a few lines to the process's stderr when it starts and stops; they are muted for that moment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from fcasearch.nativeio import native_output_held

__all__ = ["MemoryPeak", "peak_memory", "tensor_bytes"]

MIB = 2**20


@dataclass(frozen=True)
class MemoryPeak:
    """Peak memory of one piece of work, MiB.

    Attributes:
        peak_mb: resident + transient peak.
        resident_mb: bytes already allocated for the work's tensors before it ran.
        transient_mb: most bytes allocated on top of them at any moment.
        method: how the peak was measured.
    """

    peak_mb: float
    resident_mb: float
    transient_mb: float
    method: str


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of distinct storages among ``tensors`` (shared storages counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        if t.is_mkldnn:  # an opaque tensor (a packed weight): no storage to share or read
            total += t.numel() * t.element_size()
            continue
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def _cpu_transient_peak(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with native_output_held(2):  # the profiler's native start/stop log lines
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False)
        prof.start()
        try:
            fn()
        finally:
            prof.stop()
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    ]
    events.sort()
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def _cuda_transient_peak(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return max(0, torch.cuda.max_memory_allocated(device) - before)


def peak_memory(
    fn: Callable[[], object],
    resident: Iterable[torch.Tensor] = (),
    *,
    device: str | torch.device = "cpu",
) -> MemoryPeak:
    """Peak memory of ``fn()`` on ``device`` (see the module docstring for the method).

    Args:
        fn: the work (one inference batch, one training step); run once.
        resident: tensors that exist before ``fn`` and belong to the work (parameters, buffers,
            optimizer state, inputs); their bytes are added to the transient peak.
        device: ``cpu`` or ``cuda[:N]``.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        transient = _cuda_transient_peak(fn, dev)
        method = "cuda max_memory_allocated after reset_peak_memory_stats, minus prior allocation, plus resident tensors"
    elif dev.type == "cpu":
        transient = _cpu_transient_peak(fn)
        method = "torch.profiler(profile_memory=True): peak of summed CPU allocation deltas, plus resident tensors"
    else:
        raise ValueError(
            f"device: {str(device)!r} is not supported for memory; use 'cpu' or 'cuda'"
        )
    res = tensor_bytes(resident)
    return MemoryPeak(
        peak_mb=(res + transient) / MIB,
        resident_mb=res / MIB,
        transient_mb=transient / MIB,
        method=method,
    )
