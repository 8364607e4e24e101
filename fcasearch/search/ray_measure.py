"""The search's measurement jobs (references, final re-measurement) as Ray tasks.

They run where the trials run, with a trial's resources (``--cpus-per-trial``,
``--gpus-per-trial``), so that the reference models and the final rounds are measured on the
same kind of device as the candidates, under the same device lock
(:mod:`fcasearch.search.final`, :mod:`fcasearch.search.devicelock`).
"""

from __future__ import annotations

from typing import Any

from fcasearch.search.options import SearchOptions

__all__ = ["worker_runner"]


def _job(job: str, options: dict[str, Any], space: dict[str, Any], payload: dict[str, Any]) -> Any:
    """One measurement job in a Ray worker."""
    import torch

    from fcasearch.search.devicelock import lock_for
    from fcasearch.search.final import run_job
    from fcasearch.search.objective import TrialContext
    from fcasearch.space import load_space

    opts = SearchOptions.from_mapping(options, source="ray measurement options")
    torch.set_num_threads(max(1, int(opts.cpus_per_trial)))
    ctx = TrialContext(
        options=opts,
        space=load_space(space, source="run.yaml (space)"),
        lock=lock_for(opts.device),
    )
    return run_job(job, ctx, payload)


def worker_runner(options: SearchOptions, space: Any):
    """``call(job, payload) -> result`` running a job as a Ray task (inside a Ray session)."""
    import ray

    remote = ray.remote(num_cpus=options.cpus_per_trial, num_gpus=options.gpus_per_trial)(_job)
    plain_options, plain_space = options.to_dict(), space.to_dict()

    def call(job: str, payload: dict[str, Any]) -> Any:
        return ray.get(remote.remote(job, plain_options, plain_space, payload))

    return call
