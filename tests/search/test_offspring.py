"""ArchitectureOffspring: NSGA-II children that are new architectures of the space."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.study import StudyDirection

from fcasearch.measure.counting import count_macs, count_params
from fcasearch.search.offspring import ArchitectureNSGAII, ArchitectureOffspring
from fcasearch.space import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _search(space, children, n_trials: int) -> optuna.Study:
    """A two-objective NSGA-II study told the way the search tells it (arch_id user attr), its
    trials asking only the parameters their architecture uses."""
    sampler = ArchitectureNSGAII(
        space, seed=0, population_size=8, child_generation_strategy=children
    )
    study = optuna.create_study(sampler=sampler, directions=["minimize", "minimize"])
    for _ in range(n_trials):
        trial = study.ask()
        spec = space.sample(trial)
        trial.set_user_attr("arch_id", spec.arch_id)
        trial.set_constraint("space", count_params(spec) - 60_000)  # about half feasible
        study.tell(trial, [float(count_params(spec)), float(count_macs(spec))])
    return study


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_children_are_new_members_of_the_space():
    space = load_space("micro")
    kid = ArchitectureOffspring(space, seed=1)
    study = _search(space, kid, n_trials=64)
    ids = [t.user_attrs["arch_id"] for t in study.trials]
    assert len(set(ids)) == len(ids)  # no trial spent on an architecture already evaluated
    assert kid.redraws > 0  # converging parents do propose repeats: they were drawn again
    for t in study.trials:
        spec = space.from_params(t.params)
        assert space.contains(spec)
        assert set(t.params) == set(space.to_params(spec))  # only what the network uses
    # children (after the first population) come from the population: the search converges on
    # feasible, small networks
    late = study.trials[32:]
    assert sum(t.constraints["space"] <= 0 for t in late) > len(late) // 2


def test_tournament_prefers_feasible_then_dominating():
    space = load_space("micro")
    kid = ArchitectureOffspring(space, seed=0)
    dirs = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]

    def frozen(values, violation):
        return optuna.trial.create_trial(
            values=values, params={}, distributions={}, constraints={"space": violation}
        )

    good, worse = frozen([0.9, 10.0], 0.0), frozen([0.8, 12.0], 0.0)
    infeasible = frozen([0.99, 1.0], 5.0)
    less_bad = frozen([0.1, 100.0], 1.0)
    for _ in range(5):
        assert kid._better(dirs, good, worse) is good
        assert kid._better(dirs, worse, good) is good
        assert kid._better(dirs, worse, infeasible) is worse  # feasibility first
        assert kid._better(dirs, infeasible, less_bad) is less_bad  # then the smaller violation
    trade_a, trade_b = frozen([0.9, 20.0], 0.0), frozen([0.8, 10.0], 0.0)
    picks = {id(kid._better(dirs, trade_a, trade_b)) for _ in range(40)}
    assert picks == {id(trade_a), id(trade_b)}  # neither dominates: a coin flip


@pytest.mark.parametrize(
    "kwargs",
    [{"crossover_prob": 1.5}, {"swapping_prob": -0.1}, {"mutation_prob": 2}, {"max_tries": -1}],
)
def test_bad_settings_say_which(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ArchitectureOffspring(load_space("micro"), **kwargs)


def test_from_params_draws_what_is_missing_only_when_asked():
    import numpy as np

    from fcasearch.space import SpaceError

    space = load_space("micro")
    params = space.to_params(space.sample(np.random.default_rng(0)))
    params.pop("s0.width")
    with pytest.raises(SpaceError, match=r"s0\.width"):
        space.from_params(params)
    spec = space.from_params(params, rng=np.random.default_rng(1))
    assert space.contains(spec)


def test_a_population_of_clones_still_gives_a_new_architecture():
    """No crossover and no redraw can only copy the parent: after max_tries copies the space's
    own mutation makes the child a new network."""
    space = load_space("micro")
    kid = ArchitectureOffspring(space, seed=0, crossover_prob=0.0, mutation_prob=0.0, max_tries=5)
    study = optuna.create_study(directions=["minimize", "minimize"])
    trial = study.ask()
    parent = space.sample(trial, flat=True)
    trial.set_user_attr("arch_id", parent.arch_id)
    study.tell(trial, [1.0, 1.0])
    done = study.trials
    dists = done[0].distributions
    child = kid(study, dists, done * 4)
    assert kid.redraws == 5 and kid.fallbacks == 1
    assert set(child) == set(dists)
    spec = space.from_params(child)
    assert spec.arch_id != parent.arch_id and space.contains(spec)


def test_redraws_stay_inside_each_distribution():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kid = ArchitectureOffspring(load_space("micro"), seed=3)
    cases = {
        "cat": CategoricalDistribution(["a", None, 4]),
        "int": IntDistribution(1, 7, step=2),
        "logint": IntDistribution(2, 64, log=True),
        "float": FloatDistribution(0.5, 1.5),
        "logfloat": FloatDistribution(1e-4, 1e-1, log=True),
    }
    draws = {name: [kid._draw(d) for _ in range(300)] for name, d in cases.items()}
    assert set(draws["cat"]) == {"a", None, 4} and set(draws["int"]) == {1, 3, 5, 7}
    assert all(isinstance(v, int) and 2 <= v <= 64 for v in draws["logint"])
    assert min(draws["logint"]) < 8 and max(draws["logint"]) > 16  # spread over the octaves
    assert all(0.5 <= v <= 1.5 for v in draws["float"])
    assert all(1e-4 <= v <= 1e-1 for v in draws["logfloat"])
    assert sum(v < 1e-2 for v in draws["logfloat"]) > 150  # log-uniform: 2 of 3 decades


def test_a_running_trial_is_marked_and_not_proposed_again():
    """Ray runs trials concurrently: the architecture of a trial still running is recorded when
    it is sampled (``trial_config``), so children generated meanwhile avoid it too."""
    from fcasearch.search.ray_executor import trial_config
    from fcasearch.spec import ArchSpec

    space = load_space("micro")
    study = optuna.create_study(directions=["minimize", "minimize"])
    running = study.ask()
    cfg = trial_config(running, space, {}, "run")
    spec = ArchSpec.from_json(cfg["spec"])
    (frozen,) = study.get_trials(deepcopy=False)
    assert frozen.state == optuna.trial.TrialState.RUNNING
    assert frozen.user_attrs["arch_id"] == spec.arch_id and "reuse" not in cfg
    # parents that all are the running architecture: the child must differ from it
    parents = [
        optuna.trial.create_trial(
            values=[1.0, 1.0],
            params=running.params,
            distributions=frozen.distributions,
            constraints={"space": 0.0},
        )
        for _ in range(4)
    ]
    kid = ArchitectureOffspring(space, seed=0, crossover_prob=0.0, mutation_prob=0.0)
    child = kid(study, dict(frozen.distributions), parents)
    # the child sets the parameters of the distributions it was given; one that its mutated
    # architecture needs beyond them (a stage turned to attention) the trial draws itself
    drawn = space.from_params(child, rng=np.random.default_rng(0))
    assert drawn.arch_id != spec.arch_id and kid.fallbacks == 1


def test_trial_config_reuses_a_completed_row():
    from fcasearch.search.ray_executor import trial_config
    from fcasearch.spec import ArchSpec

    space = load_space("micro")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    first = trial_config(study.ask(), space, {}, "run")
    spec = ArchSpec.from_json(first["spec"])
    done = {"trial": 7, "status": "complete", "arch_id": spec.arch_id, "accuracy": 0.5}
    study2 = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    again = trial_config(study2.ask(), space, {spec.arch_id: done}, "run")
    assert again["spec"] == first["spec"]
    assert again["reuse"]["accuracy"] == 0.5 and again["reuse"]["trial"] == 0
    assert json.loads(again["reuse"]["notes"]) == {"reused_from_trial": "7"}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_nsga2_children_set_the_conditional_parameters_too():
    """Optuna's NSGA-II would hand its children only the parameters every trial shares (on
    micro: not s1.tme, which a conv stage 1 lacks) and draw the rest at random; this one hands
    them the whole space, and a child inherits a parameter from whichever parent has it."""
    space = load_space("micro")
    sampler = ArchitectureNSGAII(space, seed=0, population_size=4)
    study = optuna.create_study(sampler=sampler, directions=["minimize", "minimize"])
    assert sampler.infer_relative_search_space(study, None) == space.distributions()
    plain = optuna.samplers.NSGAIISampler(seed=0, population_size=4)
    conv, fca = None, None
    for seed in range(50):  # one parent whose stage 1 is conv, one whose stage 1 is FcaFormer
        p = space.to_params(space.sample(np.random.default_rng(seed)))
        t = optuna.trial.create_trial(
            values=[1.0, 1.0],
            params=p,
            distributions={k: space.distributions()[k] for k in p},
            user_attrs={"arch_id": str(seed)},
            constraints={"space": 0.0},
        )
        study.add_trial(t)
        if p["conv_stages"] == 2:
            conv = conv or t
        else:
            fca = fca or t
    assert "s1.tme" not in plain.infer_relative_search_space(study, None)
    kid = ArchitectureOffspring(space, seed=0, crossover_prob=1.0, swapping_prob=0.0)
    kid.mutation_prob = 0.0
    child = kid(study, space.distributions(), [conv, conv])
    assert child.keys() == space.distributions().keys()
    # crossover of a conv parent (chosen first) with an fca one: s1.tme comes from the fca
    # parent, every parameter the conv parent has from the conv parent (swapping_prob 0)
    for _ in range(10):
        chosen = iter([conv, fca])
        kid._tournament = lambda directions, parents: next(chosen)
        c = kid._child(study.directions, space.distributions(), [conv, fca])
        assert c["s1.tme"] == fca.params["s1.tme"]
        assert all(c[k] == v for k, v in conv.params.items())
