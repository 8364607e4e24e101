"""Proxy training and zero-cost proxies; nothing here knows about search.

``train_model(model, data, budget, config)`` trains within a :class:`Budget` and returns a
:class:`TrainResult`; ``compute_proxies(model, batch)`` scores an untrained model. The
calibration of both against longer training lives in :mod:`fcasearch.train.calibrate` (imported
on demand: it needs the search space and pandas).
"""

from __future__ import annotations

from fcasearch.train.budget import Budget, BudgetError
from fcasearch.train.config import AMP_MODES, STATUSES, TrainConfig, TrainError, TrainResult
from fcasearch.train.evaluation import evaluate, is_oom, recalibrate_batchnorm
from fcasearch.train.optim import NO_DECAY_SUFFIXES, lr_at, param_groups
from fcasearch.train.proxies import PROXIES, PROXY_NAMES, ProxyError, compute_proxies, fixed_batch
from fcasearch.train.trainer import train_model

__all__ = [
    "AMP_MODES",
    "NO_DECAY_SUFFIXES",
    "PROXIES",
    "PROXY_NAMES",
    "STATUSES",
    "Budget",
    "BudgetError",
    "ProxyError",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "compute_proxies",
    "evaluate",
    "fixed_batch",
    "is_oom",
    "lr_at",
    "param_groups",
    "recalibrate_batchnorm",
    "train_model",
]
