"""What a training run is asked to do (:class:`TrainConfig`) and what it gives back (:class:`TrainResult`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AMP_MODES", "STATUSES", "TrainConfig", "TrainError", "TrainResult"]

AMP_MODES = (None, "bf16", "fp16")
# complete: the budget ran out; pruned: the callback asked to stop; diverged: a non-finite loss;
# oom: out of memory. All four are results: train_model never raises for them.
STATUSES = ("complete", "pruned", "diverged", "oom")


class TrainError(ValueError):
    """A training option that cannot be used; the message names the field and the fix."""


def _positive(name: str, value: Any, *, allow_zero: bool = False, integer: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if (
        isinstance(value, bool)
        or not ok_type
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        kind = "an integer" if integer else "a number"
        bound = ">= 0" if allow_zero else "> 0"
        raise TrainError(f"{name}: {value!r} must be {kind} {bound}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedule and loop settings of one training run.

    Attributes:
        lr: peak learning rate of AdamW.
        min_lr: learning rate at the end of the cosine.
        weight_decay: AdamW decoupled weight decay of the decayed group (see
            :func:`~fcasearch.train.optim.param_groups` for what is exempt).
        warmup_fraction: share of the schedule's horizon spent in linear warm-up, in [0, 1).
        label_smoothing: label smoothing of the training loss (validation loss uses none).
        batch_size: training batch size (capped at the training split's size; the last partial
            batch of every epoch is dropped, so BatchNorm never sees a batch of one).
        eval_batch_size: validation batch size; ``None`` is twice ``batch_size``.
        clip_grad: max global gradient norm; ``None`` or 0 disables clipping.
        amp: ``None`` (float32), ``"bf16"`` (autocast, CPU or CUDA) or ``"fp16"`` (autocast with
            a gradient scaler; CUDA only).
        channels_last: put the model and 4-D inputs in channels-last memory format.
        num_workers: DataLoader worker processes (datasets that are plain tensors use none).
        seed: seeds the data order, augmentation and dropout of this run (not the model's init).
        betas: AdamW betas.
        schedule_epochs: fix the warm-up + cosine horizon at this many epochs whatever the
            budget, so that a run extended to a larger budget (a promoted trial) continues the
            same schedule; ``None`` fits the horizon to the budget.
        bn_recalibration: before every validation, reset the BatchNorm running statistics and
            re-estimate them (cumulative average, no gradients) over this many training batches;
            0 keeps the running averages of training. Short runs need it: running variances
            start at 1 while FcaFormer's activations at init are ~1e-4, and momentum 0.1 takes
            ~80 steps to forget the start, so without it a short run's eval-mode accuracy says
            little about the network.
    """

    lr: float = 2e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.1
    batch_size: int = 64
    eval_batch_size: int | None = None
    clip_grad: float | None = 1.0
    amp: str | None = None
    channels_last: bool = False
    num_workers: int = 0
    seed: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule_epochs: float | None = None
    bn_recalibration: int = 10

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("min_lr", self.min_lr, allow_zero=True)
        _positive("weight_decay", self.weight_decay, allow_zero=True)
        _positive("batch_size", self.batch_size, integer=True)
        _positive("num_workers", self.num_workers, allow_zero=True, integer=True)
        _positive("bn_recalibration", self.bn_recalibration, allow_zero=True, integer=True)
        if self.eval_batch_size is not None:
            _positive("eval_batch_size", self.eval_batch_size, integer=True)
        if self.clip_grad is not None:
            _positive("clip_grad", self.clip_grad, allow_zero=True)
        if self.schedule_epochs is not None:
            _positive("schedule_epochs", self.schedule_epochs)
        if not isinstance(self.warmup_fraction, (int, float)) or not 0 <= self.warmup_fraction < 1:
            raise TrainError(
                f"warmup_fraction: {self.warmup_fraction!r} must be in [0, 1), e.g. 0.1"
            )
        if not isinstance(self.label_smoothing, (int, float)) or not 0 <= self.label_smoothing < 1:
            raise TrainError(
                f"label_smoothing: {self.label_smoothing!r} must be in [0, 1), e.g. 0.1"
            )
        if self.amp not in AMP_MODES:
            raise TrainError(f"amp: {self.amp!r} is not one of None, 'bf16', 'fp16'")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TrainError(f"seed: {self.seed!r} must be an integer")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise TrainError(f"betas: {self.betas!r} must be two numbers in [0, 1)")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (for checkpoints and run records)."""
        return asdict(self)


@dataclass
class TrainResult:
    """The outcome of :func:`~fcasearch.train.train_model`.

    Attributes:
        status: ``complete``, ``pruned``, ``diverged`` or ``oom`` (see :data:`STATUSES`).
        reason: empty when complete; otherwise what stopped the run, in words.
        accuracy: validation top-1 (a fraction) of the **final** model, not the best epoch's:
            picking the best epoch on the validation split would bias it upwards. NaN when the
            run diverged or ran out of memory (the final model is not trustworthy then).
        best_accuracy: the best per-epoch validation top-1, for reference (NaN if none).
        val_loss: validation cross-entropy (no label smoothing) of the final model.
        epochs: epochs completed (fractional when the budget ends mid-epoch).
        steps: optimizer steps completed.
        seconds: wall time of the whole run, validation included, summed over resumes (s).
        train_seconds: time spent in training steps, the quantity a seconds budget limits (s).
        stopped_by: what ended the run: ``epochs``, ``steps``, ``seconds``, ``callback``,
            ``diverged`` or ``oom``.
        resumed_from: epochs already done in the checkpoint this run resumed from (None: fresh).
        history: one dict per validation: ``epoch`` (float), ``step``, ``train_loss``,
            ``val_loss``, ``accuracy``, ``lr`` (the last step's), ``seconds`` (cumulative wall).
    """

    status: str
    reason: str = ""
    accuracy: float = math.nan
    best_accuracy: float = math.nan
    val_loss: float = math.nan
    epochs: float = 0.0
    steps: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    stopped_by: str = ""
    resumed_from: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True for a run whose accuracy can be used (complete or pruned)."""
        return self.status in ("complete", "pruned")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-safe) of every field."""
        return asdict(self)
