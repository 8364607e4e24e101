"""Starting (or joining) Ray for a search without any traffic beyond loopback.

Out of the box a Ray head's dashboard process probes cloud metadata services at start-up (HTTP to
169.254.169.254) unless ``~/ray_bootstrap_config.yaml`` exists, and a cluster may post a usage
report. A Ray that fcasearch starts itself therefore gets, for its whole process tree:

* ``HOME`` pointing at a run-local folder holding ``ray_bootstrap_config.yaml`` with
  ``provider: {type: local}`` (the probe is skipped for a local provider);
* ``RAY_TMPDIR`` (Ray's session files) under the system's temporary folder, keyed by the run,
  outside the results folder;
* ``RAY_USAGE_STATS_ENABLED=0`` and ``RAY_USAGE_STATS_REPORT_URL`` at a loopback address;
* the node address ``127.0.0.1`` and no dashboard;
* token authentication (``ray.init``'s default) with one token per driver process
  (:func:`process_auth_token`), given to Ray's processes as ``RAY_AUTH_TOKEN``.

Why one token per process: Ray's token loader caches, in each process, the first token it reads.
Left to itself, ``ray.init`` writes a new token to ``~/.ray/auth_token``, and ``HOME`` differs
between runs; a second Ray started from the same process (a test session, a notebook) then
finds the first run's token in its cache, writes none to the new ``HOME``, and its GCS server
aborts for want of a token ("Timed out waiting for file .../gcs_server_port_..." in
``ray.init``). Giving every Ray this process starts the same token, in the environment, keeps
the driver's cache and the Ray processes in agreement. An explicit ``RAY_AUTH_MODE`` (or
``RAY_AUTH_TOKEN``) in the environment is respected.

Joining an existing cluster (``--address``) changes nothing about that cluster.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "ADDRESS_TIMEOUT_S",
    "LOOPBACK_REPORT_URL",
    "check_address",
    "check_ray_tune",
    "local_ray_env",
    "process_auth_token",
    "ray_session",
    "ray_temp_dir",
]

LOOPBACK_REPORT_URL = "http://127.0.0.1:9/usage"  # discard port: nothing listens, nothing leaves
ADDRESS_TIMEOUT_S = 10.0  # s to wait for a Ray cluster named by --address to answer


def ray_temp_dir(run_root: Path) -> Path:
    """Where a Ray started for this run keeps its session files (sockets, logs, object spill):
    under the system's temporary folder, keyed by the run (never inside the results folder,
    and short enough for Ray's unix socket paths)."""
    digest = hashlib.sha1(str(run_root.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"fcs-ray-{digest}"


def check_ray_tune() -> None:
    """Raise :class:`SearchError` (one line) when Ray Tune does not import here, before a run
    writes anything. ``ray[tune]`` is a dependency of fcasearch, so this is a partial or broken
    install: ``ray`` without the ``tune`` extra, or a ``pyarrow`` that does not load (on a GPU
    machine a trimmed ``pyarrow`` missing one of its libraries showed as Ray's "Can't import
    ray.tune as some dependencies are missing", after the run folder and study were made)."""
    from fcasearch.search.options import SearchError

    try:
        import ray.tune  # noqa: F401
    except ImportError as exc:
        cause = exc.__cause__ or exc.__context__
        detail = f"{exc}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
        raise SearchError(
            f"--executor ray: Ray Tune does not import here: {detail}; install it with "
            "pip install 'ray[tune]' (or use --executor local)"
        ) from None


def check_address(address: str, timeout_s: float = ADDRESS_TIMEOUT_S) -> None:
    """Raise :class:`SearchError` (one line) when nothing answers at a Ray ``address`` within
    ``timeout_s`` seconds (``auto`` is left to Ray, which fails at once without a cluster)."""
    from fcasearch.search.options import SearchError

    if address == "auto":
        return
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise SearchError(
            f"--address {address!r}: expected auto, HOST:PORT (the head's GCS port, 6379 by "
            "default) or ray://HOST:PORT (Ray Client, 10001 by default)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise SearchError(
            f"--address {address}: no Ray answered within {timeout_s:g} s "
            f"({type(exc).__name__}: {exc}); check that `ray start --head` runs on {host} and "
            f"that port {port} is reachable from this machine"
        ) from None


@functools.cache
def process_auth_token() -> str:
    """The token of every Ray this process starts: ``RAY_AUTH_TOKEN`` if the environment gives
    one, else a random one made once per process (Ray's loader caches the first token a process
    reads, so a second token in one process would never be presented; see the module doc)."""
    return os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)


def _auth_env() -> dict[str, str]:
    """The token for a Ray started here (``RAY_AUTH_TOKEN``). ``RAY_AUTH_MODE`` itself is left
    to ``ray.init``, which turns token mode on for a new cluster and refreshes this process's
    Ray config with it (a mode set in the environment after ``import ray`` would not be seen by
    this driver). An explicit ``RAY_AUTH_MODE=disabled``, or a token file named by
    ``RAY_AUTH_TOKEN_PATH``, is the user's choice and left alone."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return {}
    if os.environ.get("RAY_AUTH_TOKEN_PATH") and not os.environ.get("RAY_AUTH_TOKEN"):
        return {}
    return {"RAY_AUTH_TOKEN": process_auth_token()}


def local_ray_env(run_root: Path) -> dict[str, str]:
    """Environment variables (and files they need) for a Ray started by this run."""
    home = (run_root / "ray" / "home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    tmp = ray_temp_dir(run_root)
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_USAGE_STATS_REPORT_URL": LOOPBACK_REPORT_URL,
        "RAY_TMPDIR": str(tmp),
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
        "RAY_DEDUP_LOGS": "0",
        **_auth_env(),
    }


@contextlib.contextmanager
def _patched_environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in the environment while the block runs; afterwards the environment exactly as
    it was, without what Ray set meanwhile (``ray.init`` leaves ``RAY_AUTH_MODE=token`` behind,
    and a later ``ray start`` from this process would then look for a token it never made)."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        os.environ.update(saved)


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
            check_address(address)
            try:
                ray.init(address=address, logging_level="warning", log_to_driver=False)
            except (ConnectionError, TimeoutError, RuntimeError) as exc:
                from fcasearch.search.options import SearchError

                first = (str(exc).strip().splitlines() or [""])[0]
                raise SearchError(
                    f"--address {address}: cannot join that Ray cluster ({type(exc).__name__}: "
                    f"{first}); check that it runs, the address, and RAY_AUTH_MODE"
                ) from None
        try:
            yield ray.cluster_resources()
        finally:
            ray.shutdown()
