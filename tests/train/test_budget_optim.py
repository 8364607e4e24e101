"""Budgets (parse/str round trip), weight-decay groups and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from fcasearch.models import build_model, get_spec
from fcasearch.train import Budget, BudgetError, lr_at, param_groups


@pytest.mark.parametrize(
    "text", ["epochs=2", "steps=100", "seconds=30", "epochs=0.5", "epochs=5,seconds=60"]
)
def test_budget_round_trip(text):
    budget = Budget.parse(text)
    assert str(budget) == text and Budget.parse(str(budget)) == budget


def test_budget_text_is_stable():
    assert str(Budget(epochs=2.0)) == "epochs=2" == str(Budget.parse("epochs=2.0"))
    assert str(Budget(steps=10, seconds=1.5)) == "steps=10,seconds=1.5"
    assert Budget.parse(" steps = 3 ") == Budget(steps=3)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "epochs=N"),
        ("epoch=2", "epochs=N"),
        ("epochs=x", "not a number"),
        ("epochs=1,epochs=2", "twice"),
        ("steps=1.5", "whole"),
        ("seconds=-1", "positive"),
    ],
)
def test_budget_errors(text, needle):
    with pytest.raises(BudgetError, match=needle):
        Budget.parse(text)


def test_budget_needs_a_limit_and_counts_steps():
    with pytest.raises(BudgetError, match="at least one"):
        Budget()
    assert Budget(epochs=1.5).total_steps(10) == 15
    assert Budget(epochs=2, steps=7).total_steps(10) == 7
    assert Budget(epochs=0.01).total_steps(10) == 1
    assert Budget(seconds=3).total_steps(10) is None


def test_weight_decay_groups_exempt_norms_biases_and_tables():
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=10, in_chans=1)
    model = build_model(spec)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = set(no_decay["names"])
    assert any(n.endswith("attention_biases") for n in names)
    assert any(n.endswith("s_token_bias") for n in names) and any(
        n.endswith("s_scale_factors") for n in names
    )
    assert all(
        p.ndim <= 1
        for n, p in model.named_parameters()
        if n in names and not n.endswith(("attention_biases", "s_token_bias", "s_scale_factors"))
    )
    assert all(p.ndim >= 2 for p in decay["params"]) and any(
        n.endswith("qkv.weight") for n in decay["names"]
    )
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_frozen_parameters_are_left_out():
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    groups = param_groups(model, 0.1)
    assert len(groups) == 1 and groups[0]["names"] == ["weight"]


def test_warmup_then_cosine():
    assert lr_at(0.0, 1.0, 0.0, 0.1, 0.01) == pytest.approx(0.1)  # first step of 10 warm-up steps
    assert lr_at(0.05, 1.0, 0.0, 0.1) == pytest.approx(0.5)
    assert lr_at(0.1, 1.0, 0.0, 0.1) == pytest.approx(1.0)
    assert lr_at(0.55, 1.0, 0.0, 0.1) == pytest.approx(0.5)
    assert lr_at(1.0, 1.0, 1e-3, 0.1) == pytest.approx(1e-3)
    assert lr_at(0.0, 1.0, 0.0, 0.1) == pytest.approx(0.01)  # a time budget starts at 1%
    assert lr_at(0.5, 2.0, 0.0, 0.0) == pytest.approx(1.0)
    values = [lr_at(p / 100, 1.0, 0.0, 0.2, 0.01) for p in range(100)]
    peak = values.index(max(values))
    rising, falling = values[: peak + 1], values[peak:]
    assert rising == sorted(rising) and falling == sorted(falling, reverse=True)
    assert not any(map(math.isnan, values))
