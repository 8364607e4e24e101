"""``fcasearch search``: run (or resume) a multi-objective architecture search."""

from __future__ import annotations

import argparse
import sys

# CLI dest -> SearchOptions field, for options given on the command line
_FIELDS = (
    "space", "objectives", "sampler", "n_trials", "time_budget", "budget", "trial_timeout", "data",
    "data_root", "download", "subset_classes", "subset_fraction", "batch_size", "lr", "device",
    "threads", "measure", "latency_batch_size", "latency_dtype", "latency_cuda_graph",
    "scheduler", "min_epochs", "reduction_factor",
    "seed", "out", "executor", "storage", "study_name", "address", "cpus_per_trial",
    "gpus_per_trial", "max_concurrent", "max_failures", "progress", "save_weights", "hv_reference",
    "runtime", "runtime_options", "latency_cv_threshold", "references", "final_rounds",
)  # fmt: skip
# what may change when a run is resumed (how long and where it runs, not what a trial measures;
# data_root: where the same dataset lies now)
_RESUMABLE = (
    "n_trials", "time_budget", "progress", "max_concurrent", "address", "executor",
    "cpus_per_trial", "gpus_per_trial", "save_weights", "final_rounds", "max_failures",
    "data_root",
)  # fmt: skip


class _DeprecatedAsha(argparse.Action):
    """``--asha``: the earlier flag for ``--scheduler asha``, with a note on stderr."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print("fcasearch search: --asha is deprecated; use --scheduler asha", file=sys.stderr)
        namespace.scheduler = "asha"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = argparse.SUPPRESS  # unset options stay unset, so a config file or run.yaml can fill them
    p.add_argument(
        "--config",
        help="YAML file of options (keys as the long options below: n_trials: 40, no_measure: "
        "true; with --resume, checked like the command line)",
    )
    p.add_argument("--space", default=d, help="search-space YAML (e.g. search_spaces/micro.yaml)")
    p.add_argument(
        "--objectives",
        nargs="+",
        default=d,
        metavar="NAME:DIR",
        help="e.g. accuracy:max macs:min latency_ms:min (default: those three)",
    )
    p.add_argument(
        "--sampler",
        choices=["nsga2", "tpe", "random", "grid"],
        default=d,
        help="default nsga2 for several objectives, tpe for one",
    )
    p.add_argument(
        "--n-trials",
        type=int,
        default=d,
        help="trials in the run (default 20 without --time-budget; with one, no trial cap)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=d,
        metavar="S",
        help="stop starting trials after S seconds (with --n-trials: whichever comes first)",
    )
    p.add_argument(
        "--budget",
        default=d,
        help="training budget per trial: epochs=N | steps=N | seconds=S (default epochs=2); "
        "dry=S[,epochs=N]: a dry run, each trial sleeps S s instead of training (synthetic "
        "accuracy; for scaling measurements and fault tests)",
    )
    p.add_argument(
        "--trial-timeout",
        type=float,
        default=d,
        metavar="S",
        help="fail a trial that trains longer than S seconds",
    )
    p.add_argument(
        "--data", default=d, help="digits (bundled, default) | cifar10 | cifar100 | imagefolder"
    )
    p.add_argument("--data-root", default=d, help="dataset folder for cifar*/imagefolder")
    p.add_argument(
        "--download",
        action="store_true",
        default=d,
        help="allow downloading CIFAR into --data-root",
    )
    p.add_argument(
        "--subset-classes", type=int, default=d, help="use the first N classes (deterministic)"
    )
    p.add_argument(
        "--subset-fraction", type=float, default=d, help="use this fraction of each class"
    )
    p.add_argument("--batch-size", type=int, default=d, help="training batch size (default 64)")
    p.add_argument("--lr", type=float, default=d, help="AdamW learning rate (default 2e-3)")
    p.add_argument("--device", default=d, help="cpu (default) | cuda | cuda:N")
    p.add_argument(
        "--threads",
        type=int,
        default=d,
        help="CPU threads for training and measurement (default: torch's)",
    )
    p.add_argument(
        "--no-measure",
        dest="measure",
        action="store_false",
        default=d,
        help="skip latency/memory measurement when no objective or constraint needs it",
    )
    p.add_argument(
        "--latency-batch-size",
        type=int,
        default=d,
        help="batch size of latency measurement (default 1)",
    )
    p.add_argument("--latency-dtype", default=d, help="fp32 (default) | bf16 | fp16")
    p.add_argument(
        "--latency-cuda-graph",
        action="store_true",
        default=d,
        help="time a CUDA graph replay of each candidate (no kernel-launch cost; CUDA only)",
    )
    p.add_argument(
        "--runtime",
        default=d,
        help="runtime latency is measured on, for candidates and reference models alike: eager "
        "(default) | compile | onnxruntime | tensorrt (one per run)",
    )
    p.add_argument(
        "--runtime-option",
        dest="runtime_options",
        action="append",
        default=d,
        metavar="KEY=VALUE",
        help="an option of the run's runtime (repeatable): pointwise_conv=false (eager: every "
        "Linear on the BLAS sgemm), exporter=dynamo|torchscript|auto, opset=18, "
        "providers=TensorrtExecutionProvider,CUDAExecutionProvider (onnxruntime); recorded in "
        "run.yaml, fixed for the run",
    )
    p.add_argument(
        "--latency-cv-threshold",
        type=float,
        default=d,
        metavar="CV",
        help="robust CV above which a latency cell is re-measured and, still above, recorded "
        "as unstable (default 0.1)",
    )
    p.add_argument(
        "--references",
        nargs="+",
        default=d,
        metavar="MODEL",
        help="reference models measured on the run's runtime and settings (default "
        "fcaformer_l1 convnext_tiny swin_t deit_s_like; 'none' for none)",
    )
    p.add_argument(
        "--final-rounds",
        type=int,
        default=d,
        metavar="N",
        help="at the end, re-measure the Pareto set and the references in N interleaved rounds "
        "(default 10; 0: no final re-measurement)",
    )
    p.add_argument(
        "--save-weights",
        action="store_true",
        default=d,
        help="save each trained trial's final weights to <run>/weights/<arch_id>.pt "
        "(for `fcasearch export RUN_DIR:ARCH_ID`)",
    )
    p.add_argument(
        "--scheduler",
        choices=["fifo", "asha", "mo-asha"],
        default=d,
        help="early stopping at rungs of per-epoch accuracy: fifo (none, default), asha "
        "(ranks by accuracy), mo-asha (non-dominated sorting of accuracy and the cost objectives)",
    )
    p.add_argument(
        "--min-epochs",
        type=int,
        default=d,
        metavar="R",
        help="asha/mo-asha: the first rung, in epochs (default 1)",
    )
    p.add_argument(
        "--reduction-factor",
        type=int,
        default=d,
        metavar="ETA",
        help="asha/mo-asha: rungs at R*ETA^k epochs below the budget; about 1 trial in ETA goes "
        "on past each (default 3)",
    )
    p.add_argument(
        "--seed", type=int, default=d, help="seed of sampler, data split and training (default 0)"
    )
    p.add_argument("--out", default=d, help="results directory (default results/<space>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument(
        "--rebuild-study",
        action="store_true",
        help="with --resume: rebuild a lost or corrupt study.db from the run's trials.jsonl",
    )
    p.add_argument("--executor", choices=["local", "ray"], default=d, help="local (default) or ray")
    p.add_argument(
        "--storage",
        default=d,
        help="Optuna storage (default sqlite:///<out>/study.db): any SQLAlchemy URL, e.g. "
        "postgresql://USER:PASS@HOST/DB, or a journal file journal:///PATH.log for a shared "
        "file system; drivers sharing --storage and --study-name feed one study",
    )
    p.add_argument(
        "--study-name",
        default=d,
        help="Optuna study name (default: the run's folder name; on a shared --storage a study "
        "of that name must not exist yet: joining one takes --study-name)",
    )
    p.add_argument(
        "--address",
        default=d,
        help="Ray cluster to join: HOST:PORT (its GCS address), auto, or ray://host:10001; "
        "default: start a local Ray",
    )
    p.add_argument(
        "--cpus-per-trial", type=float, default=d, help="Ray resources per trial (default 1)"
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=d,
        help="Ray GPUs per trial, fractions allowed (default 0)",
    )
    p.add_argument("--max-concurrent", type=int, default=d, help="Ray trials at once (default 2)")
    p.add_argument(
        "--max-failures",
        type=int,
        default=d,
        metavar="N",
        help="Ray: start a trial again, up to N times, when its worker or node dies (default 2; "
        "each lost attempt is noted on its row)",
    )
    p.add_argument(
        "--asha",
        action=_DeprecatedAsha,
        nargs=0,
        default=d,
        help="deprecated: the same as --scheduler asha",
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", default=d, help="no progress bar"
    )
    p.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    p.add_argument(
        "--hv-reference",
        nargs="+",
        default=d,
        metavar="NAME=REF[:BEST]",
        help="hypervolume reference of an objective in its own units, e.g. latency_ms=50 "
        "peak_mem_mb=200 (needed for latency/memory objectives without a constraint; see "
        "README 'Hypervolume')",
    )


def _value(value: object) -> str:
    """An option's value for a message: an empty one is the default the run chose itself."""
    return "(the default)" if value in ("", None) else repr(value)


def config_options(path: str, args: argparse.Namespace) -> dict:
    """A config file's options by their SearchOptions names. Its keys are the long options
    (dashes or underscores: ``n_trials``, ``time-budget``) or the names run.yaml records; so
    ``no_measure: true`` is ``measure: false``, ``no_progress`` likewise, ``runtime_option`` is
    ``runtime_options``, and ``no_report: true`` is the command's own ``--no-report``."""
    from fcasearch.search.options import SearchError, legacy_options, load_config

    out = {}
    for key, value in load_config(path).items():
        k = str(key).replace("-", "_")
        if k in ("no_measure", "no_progress", "no_report"):
            if not isinstance(value, bool):
                raise SearchError(f"config {path}: {key}: give true or false, not {value!r}")
            if k == "no_report":
                args.no_report = args.no_report or value
            else:
                out[k.removeprefix("no_")] = not value
        else:
            out["runtime_options" if k == "runtime_option" else k] = value
    return legacy_options(out)  # an earlier version's keys (asha: true) by their names now


def resolve(args: argparse.Namespace):
    """SearchOptions from a config file, run.yaml (resume) and the command line, in that order.

    With ``--resume``, a config file counts as given on the command line (which wins over it):
    what it sets must be what the run has, apart from the options a resume may change."""
    from fcasearch.search.options import SearchError, SearchOptions
    from fcasearch.search.runner import earlier_threads, load_run_options

    config = config_options(args.config, args) if args.config else {}
    given = {f: getattr(args, f) for f in _FIELDS if hasattr(args, f)}
    space_dict = None
    if args.resume:
        config.pop("out", None)  # the run is where --resume says
        given = {**config, **given}
        stored, space_dict = load_run_options(args.resume)
        stored["out"] = str(args.resume)
        # the thread count the earlier trials measured with, whichever executor resumes the run
        # (left unset, each executor picks its own: see earlier_threads)
        stored["threads"] = earlier_threads(args.resume, stored)
        source = f"{args.resume}/run.yaml"
        try:
            kept = SearchOptions.from_mapping(stored, source=source).to_dict()
        except SearchError as exc:  # e.g. a value an earlier version let through unchecked
            if str(exc).startswith(source):
                raise
            raise SearchError(
                f"--resume {args.resume}: the run's options in {source} cannot run: {exc}; "
                "start a new run (another --out)"
            ) from None
        if given.get("runtime", kept["runtime"]) != kept["runtime"]:
            raise SearchError(
                f"--resume {args.resume}: the run measures latency on {kept['runtime']!r}, not "
                f"{given['runtime']!r}: one runtime per run; start a new run (another --out) to "
                f"search on {given['runtime']!r}"
            )
        what = f"{args.config} and the command line" if args.config else "command line"
        asked = SearchOptions.from_mapping({**stored, **given}, source=what).to_dict()
        fixed = [k for k in given if k not in _RESUMABLE and asked[k] != kept[k]]
        if fixed:
            changes = ", ".join(f"{k} {_value(kept[k])} -> {_value(asked[k])}" for k in fixed)
            raise SearchError(
                f"--resume {args.resume}: {changes} would change the run's search or what its "
                f"trials measure; a resumed run may change only {', '.join(_RESUMABLE)}. Start a "
                "new run (another --out) for the new settings"
            )
        stored.update({k: v for k, v in given.items() if k in _RESUMABLE})
        if given.get("executor") == "local" and "address" not in given:
            stored["address"] = None  # a Ray run resumed in-process leaves its cluster
        return SearchOptions.from_mapping(stored, source=source), space_dict
    merged = {**config, **given}
    return SearchOptions.from_mapping(merged, source=args.config or "command line"), space_dict


def run(args: argparse.Namespace) -> int:
    from fcasearch.search.options import SearchError
    from fcasearch.search.runner import run_search
    from fcasearch.space import SpaceError

    try:
        options, space_dict = resolve(args)
        outcome = run_search(
            options,
            resume=bool(args.resume),
            space_dict=space_dict,
            rebuild_study=args.rebuild_study,
        )
    except (SearchError, SpaceError) as exc:
        print(f"fcasearch search: error: {exc}", file=sys.stderr)
        return 2
    c = outcome.counts
    print(
        f"search finished: {outcome.trials_ran} trials ran this time; in all {c.get('complete', 0)} complete, "
        f"{c.get('pruned', 0)} pruned, {c.get('infeasible', 0)} infeasible, {c.get('failed', 0)} failed; "
        f"Pareto set {outcome.pareto_size}"
        + (
            f"; {outcome.recovered} interrupted trial(s) marked failed and retried"
            if outcome.recovered
            else ""
        )
    )
    if outcome.final is not None:
        from fcasearch.search.final import summary_line

        print(summary_line(outcome.final))
    kept = ("trials.jsonl", "trials.parquet", "trials.csv", "pareto.csv", "references.csv",
            "final.json", "study.db", "run.yaml", "weights")  # fmt: skip
    files = [name for name in kept if (outcome.run.root / name).exists()]
    print(f"results: {outcome.run.root}  ({', '.join(files)}; results/README.md says what each is)")
    if not args.no_report:
        try:
            from fcasearch.report import build_report

            paths = build_report([outcome.run.root])
            print(f"report:  {paths.html}\n         {paths.markdown}")
        except Exception as exc:  # the search's results stand even if the report cannot be drawn
            print(
                f"report: not built ({type(exc).__name__}: {exc}); run: python report.py {outcome.run.root}",
                file=sys.stderr,
            )
    return 0
