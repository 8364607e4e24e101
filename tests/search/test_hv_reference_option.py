"""--hv-reference: parsed and checked with the other options, stored in run.yaml's options."""

from __future__ import annotations

import argparse

import pytest

from fcasearch.commands import search as search_cmd
from fcasearch.search.options import SearchError, SearchOptions


def test_command_line_and_config_forms_agree():
    p = argparse.ArgumentParser()
    search_cmd.add_arguments(p)
    args = p.parse_args(
        ["--space", "micro", "--hv-reference", "latency_ms=50", "peak_mem_mb=2e2",
         "--objectives", "accuracy", "latency_ms", "peak_mem_mb"]
    )  # fmt: skip
    options, _ = search_cmd.resolve(args)
    assert dict(options.hv_reference) == {"latency_ms": "50", "peak_mem_mb": "200"}
    config = SearchOptions.from_mapping(
        {"space": "micro", "objectives": ["accuracy", "latency_ms", "peak_mem_mb"],
         "hv_reference": {"latency_ms": 50, "peak_mem_mb": "200"}}
    )  # fmt: skip
    assert config.hv_reference == options.hv_reference
    again = SearchOptions.from_mapping(config.to_dict())  # as run.yaml stores it
    assert again.hv_reference == config.hv_reference and again.to_dict() == config.to_dict()


def test_bad_references_fail_at_the_start():
    with pytest.raises(SearchError, match="not an objective of this search"):
        SearchOptions(space="micro", hv_reference=["peak_mem_mb=100"])
    with pytest.raises(SearchError, match="NAME=VALUE"):
        SearchOptions(space="micro", hv_reference=["latency_ms"])
