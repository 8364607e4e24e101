from __future__ import annotations

import warnings

import optuna
import pytest

from fcasearch.search.options import SearchError, SearchOptions, parse_objectives
from fcasearch.search.study import make_sampler, nsga2_population
from fcasearch.space import SpaceError


def test_objectives_parse_directions_and_defaults():
    objs = parse_objectives(["accuracy:max", "macs:min", "latency_ms"])
    assert [(o.name, o.direction) for o in objs] == [
        ("accuracy", "maximize"),
        ("macs", "minimize"),
        ("latency_ms", "minimize"),
    ]
    assert parse_objectives("proxy.synflow:max macs")[0].direction == "maximize"


def test_unknown_objective_suggests_the_close_metric():
    with pytest.raises(SearchError, match="did you mean 'accuracy'"):
        parse_objectives(["acuracy:max"])


def test_bad_direction_and_duplicates():
    with pytest.raises(SearchError, match="direction"):
        parse_objectives(["macs:smallest"])
    with pytest.raises(SearchError, match="twice"):
        parse_objectives(["macs", "macs:min"])


def test_config_unknown_key_names_file_and_suggestion():
    with pytest.raises(SearchError, match=r"cfg.yaml: unknown option 'n_trail'.*'n_trials'"):
        SearchOptions.from_mapping({"space": "s.yaml", "n_trail": 3}, source="cfg.yaml")


@pytest.mark.parametrize("rounds", [-1, -10, 1.5, True, "3"])
def test_final_rounds_must_be_a_whole_number_not_below_zero(rounds):
    with pytest.raises(SearchError, match=r"final_rounds: .* must be a whole number >= 0"):
        SearchOptions(space="s.yaml", final_rounds=rounds)
    assert SearchOptions(space="s.yaml", final_rounds=0).final_rounds == 0  # 0: none


def test_default_sampler_follows_objective_count():
    assert SearchOptions(space="s.yaml", objectives="accuracy macs").sampler_name == "nsga2"
    assert SearchOptions(space="s.yaml", objectives="accuracy").sampler_name == "tpe"


def test_samplers_are_sized_for_the_search():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ExperimentalWarning for the children hook on every run
        nsga = make_sampler(SearchOptions(space="micro", objectives="accuracy macs", n_trials=400))
    assert isinstance(nsga, optuna.samplers.NSGAIISampler)
    with pytest.raises(SpaceError, match=r"nowhere\.yaml"):  # NSGA-II's children need the space
        make_sampler(SearchOptions(space="nowhere.yaml", objectives="accuracy macs"))
    # about as many generations as members: 25 x 16 at 400 trials; 10 to 50 members
    assert nsga2_population(400) == 25 and nsga2_population(100) == 12
    assert (
        nsga2_population(5) == 10 and nsga2_population(10**6) == 50 and nsga2_population(None) == 10
    )
    tpe = make_sampler(SearchOptions(space="s.yaml", objectives="accuracy", n_trials=100))
    assert isinstance(tpe, optuna.samplers.TPESampler)


def test_search_needs_an_end_and_measurement_for_hardware_objectives():
    with pytest.raises(SearchError, match="n-trials"):
        SearchOptions(space="s.yaml", n_trials=None, time_budget=None)
    with pytest.raises(SearchError, match="latency_ms"):
        SearchOptions(space="s.yaml", objectives="accuracy latency_ms", measure=False)


def test_peak_memory_needs_a_runtime_that_measures_it():
    """Only runtimes allocating through torch measure peak inference memory (every trial's
    peak_mem_mb was NaN on the others); training memory is the same on every runtime."""
    from fcasearch.measure.inference import TORCH_ALLOCATED_RUNTIMES

    assert TORCH_ALLOCATED_RUNTIMES == ("eager", "compile")
    for runtime in ("onnxruntime", "tensorrt"):
        with pytest.raises(SearchError, match=rf"runtime '{runtime}' does not measure peak"):
            SearchOptions(space="s.yaml", objectives="accuracy peak_mem_mb", runtime=runtime)
        SearchOptions(space="s.yaml", objectives="accuracy train_mem_mb", runtime=runtime)
    for runtime in TORCH_ALLOCATED_RUNTIMES:
        SearchOptions(space="s.yaml", objectives="accuracy peak_mem_mb", runtime=runtime)


def test_cuda_graph_latency_needs_a_cuda_device():
    with pytest.raises(SearchError, match="--device cuda"):
        SearchOptions(space="s.yaml", latency_cuda_graph=True)
    assert SearchOptions(space="s.yaml", device="cuda:1", latency_cuda_graph=True).to_dict()[
        "latency_cuda_graph"
    ]


def test_cuda_trials_on_ray_must_reserve_a_gpu():
    with pytest.raises(SearchError, match="--gpus-per-trial 1"):
        SearchOptions(space="s.yaml", executor="ray", device="cuda")
    with pytest.raises(SearchError, match="use --device cuda"):
        SearchOptions(space="s.yaml", executor="ray", device="cuda:1", gpus_per_trial=1)
    ok = SearchOptions(space="s.yaml", executor="ray", device="cuda", gpus_per_trial=0.5)
    assert ok.gpus_per_trial == 0.5


def test_ray_reservations_must_fit_the_cluster():
    from fcasearch.search.ray_executor import check_resources

    o = SearchOptions(space="s.yaml", executor="ray", device="cuda", gpus_per_trial=1)
    check_resources({"CPU": 8.0, "GPU": 2.0}, o)  # fits
    with pytest.raises(SearchError, match=r"the local Ray has 0 GPU\(s\)"):
        check_resources({"CPU": 8.0}, o)
    far = SearchOptions(space="s.yaml", executor="ray", address="10.0.0.1:6379", cpus_per_trial=4)
    with pytest.raises(SearchError, match=r"cpus_per_trial: 4, but the Ray cluster at 10\.0\.0\.1"):
        check_resources({"CPU": 2.0}, far)


def test_proxy_objectives_must_be_proxies_the_trials_compute():
    from fcasearch.train.proxies import PROXY_NAMES

    for name in PROXY_NAMES:
        assert parse_objectives([f"proxy.{name}:max"])[0].name == f"proxy.{name}"
    known = ", ".join(f"proxy.{n}" for n in PROXY_NAMES)
    with pytest.raises(SearchError, match=rf"unknown proxy 'proxy\.foo'; known: {known}$"):
        parse_objectives(["accuracy:max", "proxy.foo:max"])
    with pytest.raises(SearchError, match=r"'proxy\.grad-norm' \(did you mean 'proxy\.grad_norm'"):
        SearchOptions(space="s.yaml", objectives="proxy.grad-norm macs")
    with pytest.raises(SearchError, match=r"unknown proxy 'proxy\.'"):
        parse_objectives("proxy.")


def test_latency_dtype_is_one_the_measurement_takes():
    from fcasearch.measure.prepare import DTYPES

    for dtype in DTYPES:
        assert SearchOptions(space="s.yaml", latency_dtype=dtype).latency_dtype == dtype
    listed = ", ".join(DTYPES)
    for bad in ("fp64", "FP32", None):
        with pytest.raises(SearchError, match=rf"latency_dtype: .* use one of {listed} "):
            SearchOptions(space="s.yaml", latency_dtype=bad)
    with pytest.raises(SearchError, match="latency_dtype: 'fp64'"):  # a config file alike
        SearchOptions.from_mapping({"space": "s.yaml", "latency_dtype": "fp64"}, source="c.yaml")
