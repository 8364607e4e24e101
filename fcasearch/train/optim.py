"""AdamW parameter groups and the warm-up + cosine learning-rate schedule.

Weight decay is applied to weight matrices and kernels only. Exempt: every tensor with
``ndim <= 1`` (biases, norm weights, layer scales), and the FcaFormer tables whose names end in
``attention_biases``, ``s_token_bias`` or ``s_scale_factors`` (they have more dimensions but are
biases and scales; the reference decays them, which pulls relative-position terms towards zero).
"""

from __future__ import annotations

import math

from torch import nn

__all__ = ["NO_DECAY_SUFFIXES", "lr_at", "param_groups"]

NO_DECAY_SUFFIXES = ("attention_biases", "s_token_bias", "s_scale_factors")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: ``decay`` (weight ``weight_decay``) and ``no_decay`` (weight 0).

    Each group also carries a ``names`` list (ignored by the optimizer) for inspection and tests.
    Parameters with ``requires_grad=False`` are left out; empty groups are dropped.
    """
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(NO_DECAY_SUFFIXES):
            no_decay.append(p)
            no_decay_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]
    return [g for g in groups if g["params"]]


def lr_at(
    progress: float,
    base_lr: float,
    min_lr: float,
    warmup_fraction: float,
    step_fraction: float = 0.0,
) -> float:
    """Learning rate at a point of training: linear warm-up, then cosine from ``base_lr`` to ``min_lr``.

    Args:
        progress: share of the schedule's horizon done before this step, in [0, 1] (clipped).
        base_lr: the peak learning rate.
        min_lr: the final learning rate.
        warmup_fraction: share of the horizon spent warming up linearly.
        step_fraction: share of the horizon one step covers (``1 / total_steps``), so the first
            warm-up step is already non-zero; 0 for time budgets, whose warm-up starts at 1% of
            the peak.
    """
    p = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and p < warmup_fraction:
        rise = (p + step_fraction) / warmup_fraction
        return base_lr * min(1.0, max(rise, 0.01))
    span = 1.0 - warmup_fraction
    q = (p - warmup_fraction) / span if span > 0 else 1.0
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(q, 1.0)))
