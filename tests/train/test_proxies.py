"""Zero-cost proxies on FcaFormer micro models: finite, deterministic, architecture-dependent."""

from __future__ import annotations

import math

import pytest
import torch

from fcasearch.data import get_dataset
from fcasearch.models import build_model, get_spec
from fcasearch.train import PROXY_NAMES, ProxyError, compute_proxies, fixed_batch
from fcasearch.train.proxies import naswot


@pytest.fixture(scope="module")
def batch():
    data = get_dataset("digits", img_size=32)
    return fixed_batch(data.train, 32, seed=0)


def make(name: str, **kwargs):
    torch.manual_seed(0)
    return build_model(get_spec(name, img_size=32, num_classes=10, in_chans=1, **kwargs))


def test_every_proxy_is_finite_and_differs_across_architectures(batch):
    a = compute_proxies(make("fcaformer_nano"), batch)
    b = compute_proxies(make("fcaformer_tiny"), batch)
    c = compute_proxies(make("fcaformer_nano", tme="none"), batch)
    assert list(a) == list(PROXY_NAMES)
    for name in PROXY_NAMES:
        assert all(math.isfinite(s[name]) for s in (a, b, c)), name
        assert a[name] != b[name], name
    assert a["params"] == sum(p.numel() for p in make("fcaformer_nano").parameters())
    assert a["synflow"] > 0 and a["snip"] > 0 and a["grad_norm"] > 0
    assert a["naswot"] != c["naswot"] and a["synflow"] != c["synflow"]


def test_model_is_left_unchanged_and_scores_repeat(batch):
    model = make("fcaformer_nano")
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = compute_proxies(model, batch)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32
    assert compute_proxies(model, batch) == first


def test_factory_is_seeded(batch):
    spec = get_spec("fcaformer_nano", img_size=32, num_classes=10, in_chans=1)
    one = compute_proxies(lambda: build_model(spec), batch, names=("snip", "naswot"), seed=3)
    two = compute_proxies(lambda: build_model(spec), batch, names=("snip", "naswot"), seed=3)
    assert one == two and list(one) == ["snip", "naswot"]


def test_synflow_ignores_the_batch_content(batch):
    x, y = batch
    model = make("fcaformer_nano")
    s1 = compute_proxies(model, (x, y), names=("synflow",))
    s2 = compute_proxies(model, (torch.randn_like(x), y), names=("synflow",))
    assert s1 == s2


def test_naswot_on_a_plain_relu_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)
    )
    x = torch.randn(8, 1, 4, 4)
    score = naswot(net, x, torch.zeros(8, dtype=torch.long))
    codes = (net[1](x.flatten(1)) > 0).double()
    k = codes @ codes.T + (1 - codes) @ (1 - codes).T
    assert score == pytest.approx(float(torch.linalg.slogdet(k).logabsdet))
    same = x[:1].expand(8, 1, 4, 4)
    assert naswot(net, same, torch.zeros(8, dtype=torch.long)) == -math.inf  # identical images


def test_bad_requests():
    with pytest.raises(ProxyError, match="unknown proxy"):
        compute_proxies(
            torch.nn.Linear(2, 2), (torch.zeros(2, 1, 2, 2), torch.zeros(2)), names=("zen",)
        )
    with pytest.raises(ProxyError, match="batch"):
        compute_proxies(torch.nn.Linear(2, 2), (torch.zeros(2, 4), torch.zeros(2)))
