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


def test_the_environment_is_restored_exactly(monkeypatch):
    import os

    from fcasearch.search.ray_env import _patched_environ

    monkeypatch.setenv("FCS_KEPT", "1")
    monkeypatch.delenv("FCS_ADDED", raising=False)
    with _patched_environ({"FCS_KEPT": "2"}):
        assert os.environ["FCS_KEPT"] == "2"
        os.environ["FCS_ADDED"] = "ray sets this"  # as ray.init sets RAY_AUTH_MODE
    assert os.environ["FCS_KEPT"] == "1" and "FCS_ADDED" not in os.environ
