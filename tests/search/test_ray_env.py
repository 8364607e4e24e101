"""The environment a Ray started by fcasearch gets."""

from __future__ import annotations

from pathlib import Path

from fcasearch.search.ray_env import LOOPBACK_REPORT_URL, local_ray_env


def test_local_ray_env_moves_home_but_keeps_the_users_kernel_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("FCASEARCH_KERNEL_CACHE", raising=False)
    env = local_ray_env(tmp_path)
    home = Path(env["HOME"])
    assert home == (tmp_path / "ray" / "home").resolve()
    assert (home / "ray_bootstrap_config.yaml").read_text() == "provider:\n  type: local\n"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_USAGE_STATS_REPORT_URL"] == LOOPBACK_REPORT_URL
    # the workers load the kernels this user already built instead of building them per run
    cache = Path(env["FCASEARCH_KERNEL_CACHE"])
    assert cache == (Path.home() / ".cache" / "fcasearch" / "kernels").resolve()
    assert home not in cache.parents
    monkeypatch.setenv("FCASEARCH_KERNEL_CACHE", str(tmp_path / "k"))
    assert local_ray_env(tmp_path)["FCASEARCH_KERNEL_CACHE"] == str((tmp_path / "k").resolve())


def test_the_environment_is_restored_exactly(monkeypatch):
    import os

    from fcasearch.search.ray_env import _patched_environ

    monkeypatch.setenv("FCS_KEPT", "1")
    monkeypatch.delenv("FCS_ADDED", raising=False)
    with _patched_environ({"FCS_KEPT": "2"}):
        assert os.environ["FCS_KEPT"] == "2"
        os.environ["FCS_ADDED"] = "ray sets this"  # as ray.init sets RAY_AUTH_MODE
    assert os.environ["FCS_KEPT"] == "1" and "FCS_ADDED" not in os.environ
