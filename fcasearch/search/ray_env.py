"""Starting (or joining) Ray for a search without any traffic beyond loopback.

Out of the box a Ray head's dashboard process probes cloud metadata services at start-up (HTTP to
169.254.169.254) unless ``~/ray_bootstrap_config.yaml`` exists, and a cluster may post a usage
report. A Ray that fcasearch starts itself therefore gets, for its whole process tree:

* ``HOME`` pointing at a run-local folder holding ``ray_bootstrap_config.yaml`` with
  ``provider: {type: local}`` (the probe is skipped for a local provider);
* ``RAY_USAGE_STATS_ENABLED=0`` and ``RAY_USAGE_STATS_REPORT_URL`` at a loopback address;
* the node address ``127.0.0.1`` and no dashboard.

Joining an existing cluster (``--address``) changes nothing about that cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOOPBACK_REPORT_URL", "local_ray_env", "ray_session"]

LOOPBACK_REPORT_URL = "http://127.0.0.1:9/usage"  # discard port: nothing listens, nothing leaves
_MAX_SOCKET_DIR = 60  # Ray puts unix sockets under its temp dir; their paths must stay < 108 chars


def _ray_temp_dir(run_root: Path) -> Path:
    wanted = (run_root / "ray" / "tmp").resolve()
    if len(str(wanted)) <= _MAX_SOCKET_DIR:
        return wanted
    digest = hashlib.sha1(str(wanted).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"fcs-ray-{digest}"


def local_ray_env(run_root: Path) -> dict[str, str]:
    """Environment variables (and files they need) for a Ray started by this run."""
    home = (run_root / "ray" / "home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    tmp = _ray_temp_dir(run_root)
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_USAGE_STATS_REPORT_URL": LOOPBACK_REPORT_URL,
        "RAY_TMPDIR": str(tmp),
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
        "RAY_DEDUP_LOGS": "0",
    }


@contextlib.contextmanager
def _patched_environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def ray_session(
    run_root: Path,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
) -> Iterator[dict]:
    """Start a local Ray for this run (or join ``address``) and shut down only that one.

    Yields:
        Ray's cluster resources as seen after start.
    """
    import ray

    if ray.is_initialized():
        raise RuntimeError(
            "Ray is already initialized in this process; fcasearch starts and stops its own"
        )
    env = (
        local_ray_env(run_root) if address is None else {"TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}
    )
    with _patched_environ(env):
        if address is None:
            ray.init(
                include_dashboard=False,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                _temp_dir=env["RAY_TMPDIR"],
                _node_ip_address="127.0.0.1",
                configure_logging=True,
                logging_level="warning",
                log_to_driver=False,
            )
        else:
            ray.init(address=address, logging_level="warning", log_to_driver=False)
        try:
            yield ray.cluster_resources()
        finally:
            ray.shutdown()
