"""Calibration: how well do cheap predictors rank architectures by their long-budget accuracy?

For ``n`` distinct architectures sampled from a search space (closed-form constraints applied),
each starting from one seeded initialization, this module computes the zero-cost proxies on one
fixed batch, trains a copy for the short budget and another copy for the long budget, and then
reports the Spearman and Kendall rank correlations (with p-values) of the long-budget accuracy
with each predictor: the short-budget accuracy, every proxy, and the baselines ``params`` and
``macs`` (closed-form counts) that a useful proxy must beat.

The table and correlations are DataFrames (this module draws nothing; see
:mod:`fcasearch.train.calibration_plot`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fcasearch.data import DataBundle, check_img_size, get_dataset
from fcasearch.measure.counting import count_macs, count_params
from fcasearch.spec import ArchSpec
from fcasearch.train.budget import Budget
from fcasearch.train.config import TrainConfig
from fcasearch.train.proxies import PROXY_NAMES, compute_proxies, fixed_batch
from fcasearch.train.trainer import train_model

__all__ = ["BASELINES", "CalibrationError", "CalibrationResult", "calibrate", "rank_correlations"]

BASELINES = ("params", "macs")  # closed-form counts: the predictors every proxy must beat
_MAX_DRAWS_PER_ARCH = 200  # redraws allowed to find an architecture not seen yet


class CalibrationError(ValueError):
    """A calibration that cannot run as asked; the message names the option and the fix."""


@dataclass
class CalibrationResult:
    """What :func:`calibrate` measured.

    Attributes:
        table: one row per architecture: ``arch_id``, ``spec_short``, ``params``, ``macs``,
            ``acc_short``, ``acc_long`` (final validation top-1, NaN if that run diverged or ran
            out of memory), ``status_short``, ``status_long``, ``seconds_short``,
            ``seconds_long``, one column per proxy, and ``spec`` (JSON).
        correlations: one row per predictor: ``predictor``, ``n`` (architectures with both
            values), ``spearman``, ``spearman_p``, ``kendall``, ``kendall_p``.
        short: the short budget.
        long: the long budget.
    """

    table: pd.DataFrame
    correlations: pd.DataFrame
    short: Budget
    long: Budget

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``calibration.csv`` and ``correlations.csv`` into ``out_dir``; return their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"calibration": out / "calibration.csv", "correlations": out / "correlations.csv"}
        self.table.to_csv(paths["calibration"], index=False)
        self.correlations.to_csv(paths["correlations"], index=False)
        return paths


EXACT_SPEARMAN_MAX_N = 8  # every pairing of the ranks is tried up to here (8! = 40320)


def spearman_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided p-value of Spearman's rho between ``x`` and ``y``.

    Up to :data:`EXACT_SPEARMAN_MAX_N` points it is exact: the share of all pairings of the
    ranks whose rho is at least as far from 0. scipy's value comes from a t approximation, which
    is far off there (4 points in the same order gave p = 0; the exact value is 2/24 = 1/12).
    Above that, scipy's.
    """
    from itertools import permutations

    from scipy import stats

    n = len(x)
    if n > EXACT_SPEARMAN_MAX_N:
        return float(stats.spearmanr(x, y)[1])
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    pairings = ry[np.array(list(permutations(range(n))))]  # (n!, n)
    rhos = pairings @ rx / (np.linalg.norm(rx) * np.linalg.norm(ry))
    observed = float(rx @ ry / (np.linalg.norm(rx) * np.linalg.norm(ry)))
    return float(np.mean(np.abs(rhos) >= abs(observed) - 1e-12))


def rank_correlations(table: pd.DataFrame, target: str, predictors: Sequence[str]) -> pd.DataFrame:
    """Spearman and Kendall correlations (with p-values) of ``target`` with each predictor:
    scipy's, with Spearman's p exact for few points (:func:`spearman_p`).

    Rows where either value is NaN or infinite are left out for that predictor; with fewer than
    three rows, or a constant column, the correlation is NaN.
    """
    from scipy import stats

    rows = []
    for name in predictors:
        pair = table[[target, name]].astype(float).replace([np.inf, -np.inf], np.nan).dropna()
        n = len(pair)
        rho = rho_p = tau = tau_p = math.nan
        if n >= 3 and pair[target].nunique() > 1 and pair[name].nunique() > 1:
            rho = stats.spearmanr(pair[name], pair[target])[0]
            rho_p = spearman_p(pair[name].to_numpy(), pair[target].to_numpy())
            tau, tau_p = stats.kendalltau(pair[name], pair[target])
        rows.append(
            {
                "predictor": name,
                "n": n,
                "spearman": float(rho),
                "spearman_p": float(rho_p),
                "kendall": float(tau),
                "kendall_p": float(tau_p),
            }
        )
    return pd.DataFrame(
        rows, columns=["predictor", "n", "spearman", "spearman_p", "kendall", "kendall_p"]
    )


def _check_budgets(short: Budget, long: Budget) -> None:
    """Refuse a dry run, and a short budget that cannot stop before the long one.

    A budget stops at the first of its limits reached, so the short one stops no earlier than
    the long one when each of its limits is also a limit of the long one, at least as large.
    Limits in other units (steps against epochs, seconds) cannot be compared before the data
    is known: those pairs are allowed.
    """
    for tag, budget in (("short", short), ("long", long)):
        if budget.dry is not None:
            raise CalibrationError(
                f"{tag}: {budget} is a dry run, which trains nothing; give epochs=N, steps=N or "
                "seconds=N"
            )
    limits = {f: getattr(short, f) for f in ("epochs", "steps", "seconds")}
    if all(
        getattr(long, f) is not None and value >= getattr(long, f)
        for f, value in limits.items()
        if value is not None
    ):
        raise CalibrationError(
            f"short: {short} is not shorter than long {long}: the short budget must stop first "
            "(e.g. short epochs=1, long epochs=4)"
        )


def _check_device(device: str | torch.device) -> None:
    """Refuse a device string torch does not parse, or CUDA where torch sees none."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CalibrationError(
            f"device: {str(device)!r} is not a torch device; use cpu, cuda or cuda:N"
        ) from None
    if dev.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise CalibrationError(
            f"device: {dev} was asked but torch sees no CUDA device here; use --device cpu"
        )
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise CalibrationError(
            f"device: {dev} was asked but torch sees {count} CUDA device(s) here; use "
            f"cuda:0 to cuda:{count - 1}"
        )


def _sample_distinct(space: Any, n: int, rng: np.random.Generator) -> list[ArchSpec]:
    specs: dict[str, ArchSpec] = {}
    draws = 0
    while len(specs) < n and draws < _MAX_DRAWS_PER_ARCH * n:
        spec = (
            space.sample_feasible(rng) if hasattr(space, "sample_feasible") else space.sample(rng)
        )
        specs.setdefault(spec.arch_id, spec)
        draws += 1
    if len(specs) < n:
        raise CalibrationError(
            f"n: only {len(specs)} distinct feasible architectures found in {draws} draws; ask for n <= {len(specs)}"
        )
    return list(specs.values())


def _data_loader(
    data: str | DataBundle | Callable[[ArchSpec], DataBundle], data_kwargs: Mapping[str, Any]
):
    cache: dict[tuple[int, int], DataBundle] = {}

    def for_spec(spec: ArchSpec) -> DataBundle:
        if isinstance(data, DataBundle):
            bundle = data
        elif callable(data):
            bundle = data(spec)
        else:
            size = tuple(spec.img_size)
            if size not in cache:
                cache[size] = get_dataset(data, img_size=size, **data_kwargs)
            bundle = cache[size]
        check_img_size(bundle.img_size, spec)
        if (bundle.num_classes, bundle.in_chans) != (spec.num_classes, spec.in_chans):
            raise CalibrationError(
                f"data: {bundle.name!r} has {bundle.in_chans} channels and {bundle.num_classes} classes "
                f"but the space builds {spec.in_chans} and {spec.num_classes}; set in_chans/num_classes "
                "in the space file to match the data"
            )
        return bundle

    return for_spec


def calibrate(
    space: Any,
    n: int,
    short: Budget | str,
    long: Budget | str,
    data: str | DataBundle | Callable[[ArchSpec], DataBundle] = "digits",
    seed: int = 0,
    device: str = "cpu",
    out_dir: str | Path | None = None,
    *,
    config: TrainConfig | None = None,
    proxies: Sequence[str] = tuple(p for p in PROXY_NAMES if p != "params"),
    proxy_batch_size: int = 64,
    data_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_arch: Callable[[int, dict], None] | None = None,
) -> CalibrationResult:
    """Train ``n`` sampled architectures at two budgets and rank-correlate the predictors.

    Args:
        space: a :class:`~fcasearch.space.SearchSpace` (anything with ``sample_feasible(rng)`` or
            ``sample(rng)`` returning an :class:`~fcasearch.spec.ArchSpec`).
        n: distinct architectures to sample, at least 3 (at 3 or 4 no rank correlation can
            reach p < 0.05: the smallest two-sided Spearman p is 2/n!).
        short: the cheap budget whose accuracy is a predictor.
        long: the budget whose accuracy is the target. Where the two can be compared up front
            (every limit of ``short`` is also a limit of ``long``, e.g. both in epochs), the
            short one must stop first; budgets in different units (steps against epochs) are
            taken as given.
        data: a dataset name for :func:`~fcasearch.data.get_dataset` (loaded at each spec's
            size), a :class:`~fcasearch.data.DataBundle`, or a function of the spec giving one.
        seed: seeds the sampling, every model's initialization, the proxy batch and training.
        device: where to train and score (``cpu``, ``cuda``, ``cuda:N``); checked before
            anything runs.
        out_dir: when given, ``calibration.csv`` is rewritten after every architecture (so an
            interrupted run keeps what it measured) and ``correlations.csv`` at the end.
        config: training settings (defaults: :class:`~fcasearch.train.TrainConfig` with ``seed``).
        proxies: zero-cost proxies to compute (``params`` is always a column, from the spec).
        proxy_batch_size: images in the fixed proxy batch.
        data_kwargs: extra keywords for :func:`~fcasearch.data.get_dataset` (``root``, ...).
        progress: show a progress bar over architectures on a terminal.
        on_arch: called as ``on_arch(index, row)`` after each architecture (for logging).

    Raises:
        CalibrationError: ``n`` < 3, a short budget that does not stop before the long one (or a
            dry run), a CUDA device torch does not see, too few distinct architectures, or data
            that does not fit the space. All but the last two are raised before anything runs.
    """
    from fcasearch.models import build_model

    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise CalibrationError(
            f"n: {n!r}: rank correlations need n >= 3 architectures (5 or more for any to be "
            "significant at p < 0.05)"
        )
    short, long = Budget.parse(short), Budget.parse(long)
    _check_budgets(short, long)
    _check_device(device)
    config = config or TrainConfig(seed=seed)
    names = tuple(p for p in proxies if p != "params")
    specs = _sample_distinct(space, n, np.random.default_rng(seed))
    data_for = _data_loader(data, dict(data_kwargs or {}))
    rows: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    for i, spec in enumerate(
        tqdm(specs, desc="calibrate", unit="arch", disable=None if progress else True)
    ):
        bundle = data_for(spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(spec)
        init = copy.deepcopy(model.state_dict())
        row: dict[str, Any] = {
            "arch_id": spec.arch_id,
            "spec_short": spec.short(),
            "params": count_params(spec),
            "macs": count_macs(spec),
        }
        batch = fixed_batch(bundle.train, proxy_batch_size, seed=seed)
        row.update(
            compute_proxies(model, batch, names=names, device=device, seed=seed) if names else {}
        )
        for tag, budget in (("short", short), ("long", long)):
            model.load_state_dict(init)
            result = train_model(model, bundle, budget, config, device=device, progress=False)
            row[f"acc_{tag}"] = result.accuracy
            row[f"status_{tag}"] = result.status
            row[f"seconds_{tag}"] = round(result.seconds, 3)
        row["spec"] = spec.to_json()
        rows.append(row)
        if on_arch is not None:
            on_arch(i, row)
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            _table(rows, names).to_csv(Path(out_dir) / "calibration.csv", index=False)
    table = _table(rows, names)
    predictors = ["acc_short", *names, *BASELINES]
    result = CalibrationResult(table, rank_correlations(table, "acc_long", predictors), short, long)
    if out_dir is not None:
        result.save(out_dir)
    return result


def _table(rows: list[dict[str, Any]], proxies: Sequence[str]) -> pd.DataFrame:
    columns = [
        "arch_id", "spec_short", "params", "macs", "acc_short", "acc_long", *proxies,
        "status_short", "status_long", "seconds_short", "seconds_long", "spec",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
