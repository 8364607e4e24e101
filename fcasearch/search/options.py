"""Search options: one typed object resolved from the command line and an optional config file."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fcasearch.metrics import HARDWARE_METRICS, METRICS, Objective

__all__ = [
    "HARDWARE_METRICS",
    "METRICS",
    "Objective",
    "SearchError",
    "SearchOptions",
    "check_memory_measured",
    "parse_objectives",
]

PROXY_PREFIX = "proxy."
SAMPLERS = ("nsga2", "tpe", "random", "grid")
# the models the paper compares against, measured with the candidates (--references)
DEFAULT_REFERENCES = ("fcaformer_l1", "convnext_tiny", "swin_t", "deit_s_like")
EXECUTORS = ("local", "ray")
# trials of a run given neither --n-trials nor --time-budget (SearchOptions.from_mapping: a time
# budget alone sets no trial cap, the time ends the search)
DEFAULT_N_TRIALS = 20


class SearchError(ValueError):
    """A search that cannot run as asked; the message says what to change."""


def parse_objectives(items: list[str] | str) -> tuple[Objective, ...]:
    """Parse ``["accuracy:max", "macs:min"]`` (or one space-separated string).

    A bare name takes its natural direction; ``proxy.<name>`` objectives are zero-cost proxies.
    """
    if isinstance(items, str):
        items = items.replace(",", " ").split()
    if not items:
        raise SearchError("objectives: give at least one, e.g. 'accuracy:max macs:min'")
    out: list[Objective] = []
    for item in items:
        name, _, direction = str(item).partition(":")
        if name.startswith(PROXY_PREFIX):
            _check_proxy(name)
        elif name not in METRICS:
            close = difflib.get_close_matches(name, list(METRICS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SearchError(
                f"objectives: unknown metric {name!r}{hint}; known: {', '.join(METRICS)} "
                f"and {PROXY_PREFIX}<{'|'.join(_proxy_names())}>"
            )
        direction = {"max": "maximize", "min": "minimize"}.get(direction, direction)
        if not direction:
            direction = METRICS.get(name, "maximize")
        if direction not in ("maximize", "minimize"):
            raise SearchError(f"objectives: {item!r}: direction must be 'max' or 'min'")
        if any(o.name == name for o in out):
            raise SearchError(f"objectives: {name!r} is listed twice")
        out.append(Objective(name, direction))
    return tuple(out)


def check_memory_measured(runtime: str, needed_by: str, outcome: str, drop: str) -> None:
    """SearchError when ``runtime`` does not measure peak inference memory, which ``needed_by``
    (an objective, a space constraint) needs: every trial would ``outcome``; the message says to
    drop ``drop`` or to take a runtime whose memory is measured."""
    from fcasearch.measure.inference import TORCH_ALLOCATED_RUNTIMES

    if runtime in TORCH_ALLOCATED_RUNTIMES:
        return
    raise SearchError(
        f"{needed_by}: runtime {runtime!r} does not measure peak inference memory (its "
        f"allocations bypass torch's allocator), so every trial would {outcome}; drop {drop}, or "
        f"use a runtime whose memory is measured ({', '.join(TORCH_ALLOCATED_RUNTIMES)})"
    )


def _proxy_names() -> tuple[str, ...]:
    """The zero-cost proxies a trial can compute (``fcasearch.train.proxies``)."""
    from fcasearch.train.proxies import PROXY_NAMES

    return tuple(PROXY_NAMES)


def _check_proxy(name: str) -> None:
    """SearchError unless ``proxy.<name>`` is a proxy the trials compute (every trial would fail
    on it otherwise)."""
    names = _proxy_names()
    if name[len(PROXY_PREFIX) :] in names:
        return
    close = difflib.get_close_matches(name[len(PROXY_PREFIX) :], names, n=1)
    hint = f" (did you mean '{PROXY_PREFIX}{close[0]}'?)" if close else ""
    known = [PROXY_PREFIX + p for p in names]
    raise SearchError(f"objectives: unknown proxy {name!r}{hint}; known: {', '.join(known)}")


@dataclass(frozen=True)
class SearchOptions:
    """Everything a search needs, resolved (see ``fcasearch search --help``)."""

    space: str
    objectives: tuple[Objective, ...] = field(
        default_factory=lambda: parse_objectives("accuracy:max macs:min latency_ms:min")
    )
    sampler: str = ""  # "" = nsga2 for several objectives, tpe for one
    n_trials: int | None = DEFAULT_N_TRIALS  # None: no cap (then time_budget ends the search)
    time_budget: float | None = None  # s, for the whole search
    budget: str = "epochs=2"
    trial_timeout: float | None = None  # s, per trial
    data: str = "digits"
    data_root: str | None = None
    download: bool = False
    subset_classes: int | None = None
    subset_fraction: float | None = None
    batch_size: int = 64
    lr: float = 2e-3
    device: str = "cpu"
    threads: int | None = None
    measure: bool = True
    latency_batch_size: int = 1
    latency_dtype: str = "fp32"
    latency_cuda_graph: bool = False  # time a CUDA graph replay (CUDA only)
    runtime: str = "eager"  # the one runtime latency is measured on (fcasearch.runtime)
    # that runtime's options (get_runtime keywords) as sorted (key, value) pairs; () = defaults
    runtime_options: tuple[tuple[str, Any], ...] = ()
    latency_cv_threshold: float = 0.1  # robust CV above which a latency cell is unstable
    # reference models measured like the candidates (fcasearch.search.final); () for none
    references: tuple[str, ...] = DEFAULT_REFERENCES
    final_rounds: int = 10  # interleaved rounds of the final re-measurement (0: none)
    save_weights: bool = False  # each trained trial saves <run>/weights/<arch_id>.pt
    scheduler: str = "fifo"  # fifo | asha | mo-asha (fcasearch.search.schedulers)
    min_epochs: int = 1  # first rung, r (asha, mo-asha)
    reduction_factor: int = 3  # eta: rungs at r * eta**k epochs; ~1/eta go on past each
    seed: int = 0
    out: str = ""
    executor: str = "local"
    storage: str | None = None
    study_name: str | None = None
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 2
    max_failures: int = 2  # Ray: times a trial whose worker or node died is started again
    progress: bool = True
    # hypervolume references NAME -> "REF" or "REF:BEST" (fcasearch.pareto.define_hypervolume)
    hv_reference: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.objectives, (str, list)):
            object.__setattr__(self, "objectives", parse_objectives(self.objectives))
        object.__setattr__(self, "hv_reference", _hv_reference(self.hv_reference, self.objectives))
        self._check_measurement()
        if self.sampler and self.sampler not in SAMPLERS:
            raise SearchError(f"sampler: {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.executor not in EXECUTORS:
            raise SearchError(f"executor: {self.executor!r} is not one of {', '.join(EXECUTORS)}")
        if self.address and self.executor != "ray":
            raise SearchError(
                f"address: {self.address!r} names a Ray cluster, which only the Ray executor "
                f"joins (this run's executor is {self.executor!r}); add --executor ray, or drop "
                "--address"
            )
        if self.n_trials is None and self.time_budget is None:
            raise SearchError("give --n-trials or --time-budget (or both) so the search can end")
        self._check_numbers()
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise SearchError(f"device: {self.device!r} must be 'cpu', 'cuda' or 'cuda:N'")
        if self.latency_cuda_graph and not self.device.startswith("cuda"):
            raise SearchError(
                "latency_cuda_graph: CUDA graphs need a CUDA device; add --device cuda or drop "
                "--latency-cuda-graph"
            )
        if self.executor == "ray" and self.device.startswith("cuda"):
            if self.gpus_per_trial <= 0:
                raise SearchError(
                    f"gpus_per_trial: {self.gpus_per_trial:g} with --device {self.device} on Ray: "
                    "Ray hides the GPUs from a trial that reserves none; give --gpus-per-trial 1 "
                    "(or 0.5 for two trials per GPU)"
                )
            if self.device not in ("cuda", "cuda:0"):
                raise SearchError(
                    f"device: {self.device!r} on Ray: each trial sees only the GPU Ray gives it "
                    "(as cuda:0); use --device cuda"
                )
        self._check_scheduler()
        from fcasearch.search.dry import dry_budget

        if dry_budget(self.budget) is not None:
            named = [
                o.name for o in self.objectives if o.name not in ("accuracy", "params", "macs")
            ]
            if named:
                raise SearchError(
                    f"objectives {named}: a dry run (--budget {self.budget}) measures and trains "
                    "nothing; its trials give params, macs and a synthetic accuracy only"
                )
        if not self.measure and any(o.name in HARDWARE_METRICS for o in self.objectives):
            names = [o.name for o in self.objectives if o.name in HARDWARE_METRICS]
            raise SearchError(f"objectives {names} need measurement; drop --no-measure")

    def _check_measurement(self) -> None:
        """The runtime (one per run), the reference models, the dtype and the stability settings."""
        from fcasearch.runtime import RUNTIMES

        if self.runtime not in RUNTIMES:
            raise SearchError(
                f"runtime: {self.runtime!r} is not known; choose one of {', '.join(RUNTIMES)} "
                "(one runtime per search)"
            )
        object.__setattr__(
            self, "runtime_options", _runtime_options(self.runtime_options, self.runtime)
        )
        self._check_runtime_metrics()
        refs = self.references
        if isinstance(refs, str):
            refs = refs.replace(",", " ").split()
        refs = tuple(str(r) for r in (refs or ()))
        refs = () if refs in (("none",), ("",)) else tuple(dict.fromkeys(refs))
        known = _reference_names() if refs and refs != DEFAULT_REFERENCES else list(refs)
        for name in refs:
            if name not in known:
                raise SearchError(
                    f"references: {name!r} is not a known model; choose from "
                    f"{', '.join(known)} (or 'none')"
                )
        object.__setattr__(self, "references", refs)
        from fcasearch.measure.prepare import DTYPES, parse_dtype

        try:
            parse_dtype(self.latency_dtype)
        except ValueError:
            raise SearchError(
                f"latency_dtype: {self.latency_dtype!r} is not supported; use one of "
                f"{', '.join(DTYPES)} (--latency-dtype)"
            ) from None
        cv = self.latency_cv_threshold
        if isinstance(cv, str):
            try:
                cv = float(cv)
            except ValueError:
                raise SearchError(f"latency_cv_threshold: {cv!r} is not a number") from None
            object.__setattr__(self, "latency_cv_threshold", cv)
        if not _finite(cv) or cv <= 0:
            raise SearchError(
                f"latency_cv_threshold: {cv!r} must be a positive number, e.g. 0.1 "
                "(--latency-cv-threshold)"
            )
        rounds = self.final_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise SearchError(f"final_rounds: {rounds!r} must be a whole number >= 0 (0: none)")

    def _check_runtime_metrics(self) -> None:
        """SearchError for an objective the run's runtime cannot give: peak inference memory is
        measured only on runtimes whose allocations go through torch's allocator; on any other
        every trial's value would be NaN (the study told inf, no Pareto set). Training memory is
        measured the same for every runtime; energy depends on the device, not the runtime."""
        named = [o.name for o in self.objectives if o.name == "peak_mem_mb"]
        if named:
            check_memory_measured(
                self.runtime, f"objectives {named}", "give NaN", f"{named[0]} from --objectives"
            )

    def _check_scheduler(self) -> None:
        from fcasearch.search.schedulers import SCHEDULERS, rung_objectives, schedule_for

        if self.scheduler not in SCHEDULERS:
            raise SearchError(
                f"scheduler: {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}"
            )
        if self.scheduler == "fifo":
            return
        try:
            rung_objectives(self.scheduler, self.objectives)
            schedule_for(self)
        except ValueError as exc:
            raise SearchError(str(exc)) from None

    def _check_numbers(self) -> None:
        """Counts, durations and sizes that no trial could run with are errors before any trial
        starts (as the budget's form is)."""
        from fcasearch.train.budget import Budget, BudgetError

        try:
            budget = Budget.parse(self.budget)
        except BudgetError as exc:
            raise SearchError(f"{exc} (--budget)") from None
        for name in ("time_budget", "trial_timeout", "lr", "cpus_per_trial", "gpus_per_trial",
                     "subset_fraction"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, str):  # YAML reads 2e-3 as a string
                try:
                    object.__setattr__(self, name, float(value))
                except ValueError:
                    raise SearchError(f"{name}: {value!r} is not a number") from None
        whole = {
            "n_trials": self.n_trials,
            "batch_size": self.batch_size,
            "latency_batch_size": self.latency_batch_size,
            "max_concurrent": self.max_concurrent,
            "threads": self.threads,
            "subset_classes": self.subset_classes,
        }
        for name, value in whole.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise SearchError(f"{name}: {value!r} must be a whole number >= 1 ({flag})")
        positive = {
            "time_budget": self.time_budget,
            "trial_timeout": self.trial_timeout,
            "lr": self.lr,
            "cpus_per_trial": self.cpus_per_trial,
        }
        for name, value in positive.items():
            if value is None:
                continue
            if not _finite(value) or value <= 0:
                flag = "--" + name.replace("_", "-")
                raise SearchError(f"{name}: {value!r} must be a positive number ({flag})")
        if (
            isinstance(self.max_failures, bool)
            or not isinstance(self.max_failures, int)
            or self.max_failures < 0
        ):
            raise SearchError(
                f"max_failures: {self.max_failures!r} must be a whole number >= 0 (--max-failures)"
            )
        if not _finite(self.gpus_per_trial) or self.gpus_per_trial < 0:
            raise SearchError(
                f"gpus_per_trial: {self.gpus_per_trial!r} must be 0 or more (--gpus-per-trial)"
            )
        if self.subset_fraction is not None and not (
            _finite(self.subset_fraction) and 0 < self.subset_fraction <= 1
        ):
            raise SearchError(
                f"subset_fraction: {self.subset_fraction!r} must be in (0, 1] (--subset-fraction)"
            )
        timed_only = budget.seconds is not None and budget.epochs is None and budget.steps is None
        if timed_only and self.trial_timeout is not None and self.trial_timeout <= budget.seconds:
            raise SearchError(
                f"trial_timeout: {self.trial_timeout:g} s would fail every trial: each trains for "
                f"the budget's {budget.seconds:g} s (--budget {self.budget}); give a "
                f"--trial-timeout above it, or none"
            )

    @property
    def sampler_name(self) -> str:
        return self.sampler or ("tpe" if len(self.objectives) == 1 else "nsga2")

    @property
    def objective_pairs(self) -> list[tuple[str, str]]:
        """(metric, direction) pairs, the form the trial log's exports take."""
        return [(o.name, o.direction) for o in self.objectives]

    @property
    def trains(self) -> bool:
        """Whether trials train (only when accuracy is an objective)."""
        return any(o.name == "accuracy" for o in self.objectives)

    @property
    def runtime_label(self) -> str:
        """The runtime and its options, as a shared study and the reports tell runtimes apart
        (``eager``, ``eager (pointwise_conv=False)``)."""
        from fcasearch.runtime import runtime_label

        return runtime_label(self.runtime, self.runtime_kwargs)

    def measured_threads(self) -> int:
        """The CPU threads a trial's latency is measured with: ``threads``, else what the
        executor gives a trial (``cpus_per_trial`` on Ray, torch's count in this process)."""
        if self.threads:
            return int(self.threads)
        if self.executor == "ray":
            return max(1, int(self.cpus_per_trial))
        import torch

        return torch.get_num_threads()

    def study_label(self) -> str:
        """What a shared study tells its drivers' latencies apart by (each trial's ``runtime``
        user attribute): the runtime with its options and the settings latency also depends on,
        as the reports name them (``eager at batch 1, fp32, 2 threads``). Drivers that differ in
        any of them must not mix their latencies, nor reuse each other's."""
        from fcasearch.metrics import latency_label, settings_text

        at = settings_text(
            self.latency_batch_size,
            self.latency_dtype,
            self.measured_threads(),
            self.latency_cuda_graph,
        )
        return latency_label(self.runtime_label, at)

    @property
    def runtime_kwargs(self) -> dict[str, Any]:
        """``runtime_options`` as keywords of :func:`fcasearch.runtime.get_runtime`."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.runtime_options}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["objectives"] = [f"{o.name}:{o.direction[:3]}" for o in self.objectives]
        d["hv_reference"] = dict(self.hv_reference)
        d["runtime_options"] = self.runtime_kwargs
        d["references"] = list(self.references)
        return d

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "options") -> SearchOptions:
        """Options from a dict (a config file and the command line, or a run.yaml); unknown keys
        are errors with a suggestion. Without ``n_trials``, a ``time_budget`` alone ends the
        search (no trial cap); with neither, the run has ``DEFAULT_N_TRIALS`` trials."""
        known = {f.name for f in dataclasses.fields(cls)}
        clean = {}
        for key, value in legacy_options(data).items():
            k = str(key).replace("-", "_")
            if k not in known:
                close = difflib.get_close_matches(k, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise SearchError(f"{source}: unknown option {key!r}{hint}")
            clean[k] = value
        if "space" not in clean:
            raise SearchError(f"{source}: 'space' is required (a search-space YAML file)")
        if "n_trials" not in clean and clean.get("time_budget") is not None:
            clean["n_trials"] = None  # a time budget alone ends the search, not the default count
        try:
            return cls(**clean)
        except TypeError as exc:
            raise SearchError(f"{source}: {exc}") from None


def legacy_options(data: Mapping[str, Any]) -> dict[str, Any]:
    """Options of earlier versions (a run.yaml to resume, an old config): ``asha: true`` is
    ``scheduler: asha`` (deprecated); ``pruner`` (the median pruner, replaced by the
    schedulers) is dropped."""
    out = dict(data)
    asha = out.pop("asha", None)
    out.pop("pruner", None)
    if asha and "scheduler" not in out:
        out["scheduler"] = "asha"
    return out


def _hv_reference(raw: Any, objectives: tuple[Objective, ...]) -> tuple[tuple[str, str], ...]:
    """``--hv-reference`` items (or a config mapping) as sorted (name, "REF[:BEST]") pairs."""
    from fcasearch.pareto import HypervolumeError, parse_hv_reference

    if isinstance(raw, tuple) and all(isinstance(p, tuple) for p in raw):
        raw = dict(raw)
    try:
        parsed = parse_hv_reference(raw or None, source="hv_reference")
    except HypervolumeError as exc:
        raise SearchError(str(exc)) from None
    names = [o.name for o in objectives]
    for name in parsed:
        if name not in names:
            raise SearchError(
                f"hv_reference: {name!r} is not an objective of this search ({', '.join(names)})"
            )
    return tuple(
        sorted(
            (n, f"{r:.17g}" + (f":{b:.17g}" if b is not None else ""))
            for n, (r, b) in parsed.items()
        )
    )


def _runtime_options(raw: Any, runtime: str) -> tuple[tuple[str, Any], ...]:
    """``--runtime-option`` items (``KEY=VALUE`` or ``RUNTIME.KEY=VALUE``), a config mapping or
    stored pairs, as sorted (key, value) pairs the run's runtime accepts."""
    from fcasearch.runtime import get_runtime, parse_runtime_options

    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, Mapping):
        options = dict(raw)
    elif raw and all(isinstance(item, str) for item in raw):
        for item in raw:
            if "=" not in item or not item.partition("=")[0].strip():
                raise SearchError(
                    f"runtime_options: {item!r}: give KEY=VALUE, e.g. pointwise_conv=false "
                    "(eager) or exporter=dynamo (onnxruntime)"
                )
        items = [
            item if "." in item.partition("=")[0] else f"{runtime}.{item.strip()}" for item in raw
        ]
        try:
            parsed = parse_runtime_options(items)
        except ValueError as exc:
            raise SearchError(f"runtime_options: {exc}") from None
        others = sorted(set(parsed) - {runtime})
        if others:
            raise SearchError(
                f"runtime_options: options for {', '.join(others)}, but the run measures latency "
                f"on {runtime!r} (one runtime per run); give KEY=VALUE for {runtime!r}"
            )
        options = parsed.get(runtime, {})
    else:
        options = dict(raw or ())
    try:
        rt = get_runtime(runtime, **{str(k): v for k, v in options.items()})
    except ValueError as exc:
        raise SearchError(f"runtime_options: {exc}") from None
    return tuple(sorted(rt.options.items()))  # normalized; an option at its default is dropped


def _reference_names() -> list[str]:
    """Names ``--references`` accepts: the FcaFormer registry and the torchvision baselines."""
    from fcasearch.measure.baselines import list_baselines
    from fcasearch.models.registry import list_models

    return [*list_models(), *list_baselines()]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file of search options (keys as the long CLI options)."""
    path = Path(path)
    if not path.exists():
        raise SearchError(f"config {path}: file not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SearchError(f"config {path}: expected a mapping of options at the top level")
    return data
