"""The budgeted proxy trainer: AdamW, warm-up + cosine, label smoothing, clipping, AMP, resume.

One call to :func:`train_model` trains a model on a :class:`~fcasearch.data.DataBundle` until its
:class:`~fcasearch.train.Budget` runs out, validating after every epoch (and once more at the end
of a budget that stops mid-epoch). After each validation it calls ``callback(epoch, metrics)``;
a truthy return stops the run as ``pruned``. A non-finite training or validation loss stops it as
``diverged`` and running out of memory as ``oom``: both come back as results, never exceptions.

Determinism: the run's random draws (data order, augmentation, dropout) happen inside
``torch.random.fork_rng`` seeded from ``config.seed``, so the caller's global RNG is left as it
was, and on CPU the same model init, data and seed give the same history. The data order of
epoch ``e`` depends on ``(seed, e)`` only, so a run resumed from a checkpoint at an epoch
boundary continues exactly as an uninterrupted one would.

Validation: before each one, BatchNorm running statistics are re-estimated from a few training
batches (``TrainConfig.bn_recalibration``); a short run's running averages still remember their
initial values and would otherwise make its eval-mode accuracy meaningless.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fcasearch.data.bundle import DataBundle
from fcasearch.train.budget import Budget
from fcasearch.train.checkpoint import load_checkpoint, save_checkpoint
from fcasearch.train.config import TrainConfig, TrainError, TrainResult
from fcasearch.train.evaluation import (
    AMP_DTYPES,
    Batches,
    evaluate,
    is_oom,
    recalibrate_batchnorm,
    to_device,
)
from fcasearch.train.optim import lr_at, param_groups

__all__ = ["Callback", "train_model"]

Callback = Callable[[int, dict], bool]


class _Run:
    """The state of one call to :func:`train_model` (split out to keep each step readable)."""

    def __init__(
        self,
        model,
        data: DataBundle,
        budget: Budget,
        config: TrainConfig,
        device,
        callback,
        path,
        progress,
        guard=None,
    ):
        self.model, self.data, self.budget, self.cfg = model, data, budget, config
        self.device, self.callback, self.path, self.progress = device, callback, path, progress
        self.guard = guard or contextlib.nullcontext
        for split in ("train", "val"):
            if len(getattr(data, split)) == 0:
                raise TrainError(
                    f"data.{split}: the {data.name!r} {split} split is empty; nothing to train or score on"
                )
        pin = device.type == "cuda"
        self.train_batches = Batches(
            data.train,
            config.batch_size,
            train=True,
            seed=config.seed,
            workers=config.num_workers,
            pin=pin,
        )
        eval_bs = config.eval_batch_size or 2 * config.batch_size
        self.val_batches = Batches(
            data.val, eval_bs, train=False, seed=0, workers=config.num_workers, pin=pin
        )
        self.spe = len(self.train_batches)  # steps per epoch
        self.limit = budget.total_steps(self.spe)  # None: seconds only
        self.horizon = (
            round(config.schedule_epochs * self.spe) if config.schedule_epochs else self.limit
        )
        self.amp_dtype = AMP_DTYPES[config.amp]
        self.optimizer = torch.optim.AdamW(
            [
                {k: v for k, v in g.items() if k != "names"}
                for g in param_groups(model, config.weight_decay)
            ],
            lr=config.lr,
            betas=config.betas,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
        self.step, self.epoch, self.history = 0, 0, []
        self.train_seconds, self.wall_before, self.lr = 0.0, 0.0, 0.0
        self.resumed_from: float | None = None
        self.t0 = time.perf_counter()

    # ---- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "steps_per_epoch": self.spe,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "wall_seconds": self._wall(),
            "rng_cpu": torch.get_rng_state(),
            "budget": str(self.budget),
            "config": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in self.cfg.to_dict().items()
            },
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _resume(self) -> None:
        state = load_checkpoint(self.path)
        if state is None:
            return
        if state["steps_per_epoch"] != self.spe:
            raise TrainError(
                f"checkpoint_path: {str(self.path)!r} was written with {state['steps_per_epoch']} steps per "
                f"epoch but this run has {self.spe} (other data or batch size); delete it or use another path"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.history = state["step"], state["epoch"], list(state["history"])
        self.train_seconds, self.wall_before = state["train_seconds"], state["wall_seconds"]
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.resumed_from = self.step / self.spe
        if self.history:
            self.lr = self.history[-1]["lr"]

    def _wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    # ---- the loop ----------------------------------------------------------------------------
    def _budget_left(self) -> str:
        """Which limit is reached ('' while training may go on)."""
        if self.limit is not None and self.step >= self.limit:
            b = self.budget
            steps_limit = b.steps is not None and (
                b.epochs is None or b.steps <= round(b.epochs * self.spe)
            )
            return "steps" if steps_limit else "epochs"
        if self.budget.seconds is not None and self.train_seconds >= self.budget.seconds:
            return "seconds"
        return ""

    def _lr_now(self) -> float:
        c = self.cfg
        if self.horizon:
            return lr_at(
                self.step / self.horizon, c.lr, c.min_lr, c.warmup_fraction, 1.0 / self.horizon
            )
        return lr_at(self.train_seconds / self.budget.seconds, c.lr, c.min_lr, c.warmup_fraction)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.lr = self._lr_now()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        x, y = to_device(x, y, self.device, self.cfg.channels_last)
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
        value = loss.item()
        if not math.isfinite(value):
            return value
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return value

    def _validate(self, train_loss: float) -> dict:
        # a data order of its own (index past any epoch), so recalibration never shifts training's
        calib = self.train_batches.epoch(-1 - self.step)
        recalibrate_batchnorm(
            self.model,
            calib,
            self.cfg.bn_recalibration,
            self.device,
            amp=self.cfg.amp,
            channels_last=self.cfg.channels_last,
        )
        loss, acc = evaluate(
            self.model,
            self.val_batches,
            self.device,
            amp=self.cfg.amp,
            channels_last=self.cfg.channels_last,
        )
        self.model.train()
        return {
            "epoch": round(self.step / self.spe, 6),
            "step": self.step,
            "train_loss": train_loss,
            "val_loss": loss,
            "accuracy": acc,
            "lr": self.lr,
            "seconds": self._wall(),
        }

    def run(self) -> TrainResult:
        self._resume()
        self.model.train()
        bar = _progress_bar(self.progress, self.limit, self.step, str(self.budget))
        try:
            return self._loop(bar)
        finally:
            bar.close()

    def _loop(self, bar) -> TrainResult:
        stopped = self._budget_left()
        while not stopped:
            loss_sum, n_steps = 0.0, 0
            for x, y in self.train_batches.epoch(self.epoch):
                with self.guard():  # e.g. a device lock that measurements take exclusively
                    t = time.perf_counter()
                    value = self._train_step(x, y)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    self.train_seconds += time.perf_counter() - t
                if not math.isfinite(value):
                    where = f"step {self.step + 1} (epoch {self.step / self.spe:.2f})"
                    return self._result(
                        "diverged", f"diverged: training loss {value} at {where}", "diverged"
                    )
                self.step += 1
                loss_sum, n_steps = loss_sum + value, n_steps + 1
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", lr=f"{self.lr:.2e}", refresh=False)
                stopped = self._budget_left()
                if stopped:
                    break
            if self.step % self.spe == 0:
                self.epoch = self.step // self.spe
            with self.guard():
                entry = self._validate(loss_sum / max(n_steps, 1))
            self.history.append(entry)
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", acc=f"{entry['accuracy']:.3f}")
            if not math.isfinite(entry["val_loss"]):
                return self._result(
                    "diverged",
                    f"diverged: validation loss {entry['val_loss']} at epoch {entry['epoch']:g}",
                    "diverged",
                )
            if self.path is not None and self.step % self.spe == 0:
                save_checkpoint(self.path, self._state())
            if self.callback is not None and self.callback(
                math.ceil(self.step / self.spe), dict(entry)
            ):
                return self._result(
                    "pruned",
                    f"pruned: stopped by the callback after epoch {entry['epoch']:g}",
                    "callback",
                )
        return self._result("complete", "", stopped)

    def _result(self, status: str, reason: str, stopped_by: str) -> TrainResult:
        accs = [h["accuracy"] for h in self.history]
        usable = status in ("complete", "pruned") and self.history
        last = self.history[-1] if usable else {}
        return TrainResult(
            status=status,
            reason=reason,
            accuracy=last.get("accuracy", math.nan),
            best_accuracy=max(accs) if accs else math.nan,
            val_loss=last.get("val_loss", math.nan),
            epochs=round(self.step / self.spe, 6),
            steps=self.step,
            seconds=self._wall(),
            train_seconds=self.train_seconds,
            stopped_by=stopped_by,
            resumed_from=self.resumed_from,
            history=list(self.history),
        )


def _progress_bar(enabled: bool, total: int | None, initial: int, budget: str):
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal only, so logs and the search's own bar stay clean
    return tqdm(
        total=total,
        initial=initial,
        disable=None if enabled else True,
        unit="step",
        desc=f"train {budget}",
        leave=False,
        dynamic_ncols=True,
    )


def train_model(
    model: nn.Module,
    data: DataBundle,
    budget: Budget | str,
    config: TrainConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    callback: Callback | None = None,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    guard: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data.train`` within ``budget``; validate on ``data.val`` every epoch.

    Args:
        model: a module mapping ``(B, C, H, W)`` images to ``(B, classes)`` logits; trained in
            place and moved to ``device``.
        data: the train/val bundle (:func:`~fcasearch.data.get_dataset`).
        budget: a :class:`Budget` or its text (``"epochs=2"``).
        config: optimizer, schedule and loop settings (defaults: :class:`TrainConfig`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        callback: ``callback(epoch, metrics) -> bool`` after every validation (``epoch`` counts
            from 1; ``metrics`` is the history entry); a truthy return stops the run as pruned.
        checkpoint_path: where to save model, optimizer, scaler, RNG and history at each epoch
            end (atomically); an existing file there is resumed from. A checkpoint already at or
            past the budget is returned as it is, without training.
        progress: show a progress bar when stderr is a terminal.
        guard: a context manager factory entered around every training step and every
            validation (the search passes its device lock's shared section, so that no latency
            measurement overlaps them); None: nothing.

    Returns:
        The :class:`TrainResult`; ``status`` is ``complete``, ``pruned``, ``diverged`` or ``oom``.

    Raises:
        TrainError: fp16 AMP without CUDA, a checkpoint written for other data, or a dry-run
            budget (``dry=S``: nothing is to be trained).
    """
    config = config or TrainConfig()
    budget = Budget.parse(budget)
    if budget.dry is not None:
        raise TrainError(f"budget {budget}: a dry run trains nothing (drop dry=S to train)")
    device = torch.device(device)
    if config.amp == "fp16" and device.type != "cuda":
        raise TrainError(
            f"amp: 'fp16' needs a CUDA device, not {str(device)!r}; use amp='bf16' or None on CPU"
        )
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    run: _Run | None = None
    oom_reason = ""
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        try:
            run = _Run(
                model, data, budget, config, device, callback, checkpoint_path, progress, guard
            )
            return run.run()
        except Exception as exc:
            if not is_oom(exc):
                raise
            oom_reason = f"oom: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    # out of the except block, so the traceback no longer pins the tensors it saw
    if run is not None:
        run.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
    if run is None:
        return TrainResult(status="oom", reason=oom_reason, stopped_by="oom")
    return run._result("oom", oom_reason, "oom")
