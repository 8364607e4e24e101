"""The environment a Ray started by fcasearch gets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fcasearch.search.ray_env import LOOPBACK_REPORT_URL, local_ray_env


def test_local_ray_env_moves_home(tmp_path):
    env = local_ray_env(tmp_path)
    home = Path(env["HOME"])
    assert home == (tmp_path / "ray" / "home").resolve()
    assert (home / "ray_bootstrap_config.yaml").read_text() == "provider:\n  type: local\n"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_USAGE_STATS_REPORT_URL"] == LOOPBACK_REPORT_URL


def test_the_environment_is_restored_exactly(monkeypatch):
    import os

    from fcasearch.search.ray_env import _patched_environ

    monkeypatch.setenv("FCS_KEPT", "1")
    monkeypatch.delenv("FCS_ADDED", raising=False)
    with _patched_environ({"FCS_KEPT": "2"}):
        assert os.environ["FCS_KEPT"] == "2"
        os.environ["FCS_ADDED"] = "ray sets this"  # as ray.init sets RAY_AUTH_MODE
    assert os.environ["FCS_KEPT"] == "1" and "FCS_ADDED" not in os.environ


_TWO_RUNS = """
import sys, ray
from pathlib import Path
from fcasearch.search.ray_env import ray_session

for name in ("a", "b", "c"):
    with ray_session(Path(sys.argv[1]) / name, num_cpus=1):
        print(name, ray.get(ray.remote(lambda: 1).remote(), timeout=120), flush=True)
"""


@pytest.mark.slow
def test_one_process_starts_ray_for_several_runs(tmp_path):
    """Three runs in one process, each with its own HOME and Ray (the CI failure: Ray caches the
    first run's auth token in the driver, and the second run's GCS found no token and never
    started). Run without any RAY_AUTH_* setting, as a user's fresh shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _TWO_RUNS, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["a", "1", "b", "1", "c", "1"]
    # each run's Ray got its own HOME; none of them wrote a token into it (the token travels in
    # the environment of the Ray processes, never into the results folder)
    for name in "abc":
        assert not (tmp_path / name / "ray" / "home" / ".ray" / "auth_token").exists()


def test_a_process_has_one_auth_token(tmp_path, monkeypatch):
    from fcasearch.search.ray_env import process_auth_token

    tokens = {local_ray_env(tmp_path / run)["RAY_AUTH_TOKEN"] for run in ("x", "y")}
    assert tokens == {process_auth_token()}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's choice is left alone
    assert "RAY_AUTH_TOKEN" not in local_ray_env(tmp_path / "z")
