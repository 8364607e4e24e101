"""The environment a Ray started by fcasearch gets."""

from __future__ import annotations

from pathlib import Path

from fcasearch.search.ray_env import LOOPBACK_REPORT_URL, local_ray_env


def test_local_ray_env_moves_home(tmp_path):
    env = local_ray_env(tmp_path)
    home = Path(env["HOME"])
    assert home == (tmp_path / "ray" / "home").resolve()
    assert (home / "ray_bootstrap_config.yaml").read_text() == "provider:\n  type: local\n"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_USAGE_STATS_REPORT_URL"] == LOOPBACK_REPORT_URL
