"""fvcore counting with this package's handles: SDPA, matmul variants, uncounted operators."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcasearch.measure.baselines import build_baseline
from fcasearch.measure.flops import CORE_OPERATORS, count_flops_fvcore, count_macs_torch


class CrossAttention(nn.Module):
    """Queries from x, keys/values from x and extra tokens; value width differs from key width."""

    def __init__(self, dim: int = 16, heads: int = 2, value_dim: int = 24) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, value_dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        kv_in = torch.cat([x, extra], dim=1)  # (B, N+M, d)
        q = self.q(self.norm(x)).view(b, n, self.heads, -1).transpose(1, 2)  # (B, h, N, E)
        k = self.k(kv_in).view(b, kv_in.shape[1], self.heads, -1).transpose(1, 2)
        v = self.v(kv_in).view(b, kv_in.shape[1], self.heads, -1).transpose(1, 2)  # Ev = 12
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, Ev)
        return F.gelu(out) * 2.0


def test_sdpa_is_counted_with_its_formula():
    b, n, m, d, h, dv = 2, 9, 4, 16, 2, 24
    model = CrossAttention(d, h, dv)
    report = count_flops_fvcore(model, (torch.randn(b, n, d), torch.randn(b, m, d)))
    e, ev, s = d // h, dv // h, n + m
    assert report.by_operator["scaled_dot_product_attention"] == b * h * n * s * (e + ev)
    assert report.by_operator["linear"] == b * (n * d * d + s * d * d + s * d * dv)
    assert report.unit == "MAC"
    assert "aten::scaled_dot_product_attention" not in report.uncounted
    # counted against torch's own counter (math backend: 2 FLOPs per MAC)
    assert report.core_macs == count_macs_torch(model, (torch.randn(b, n, d), torch.randn(b, m, d)))


def test_uncounted_operators_are_listed_not_hidden():
    model = CrossAttention()
    report = count_flops_fvcore(model, (torch.randn(1, 4, 16), torch.randn(1, 2, 16)))
    assert "aten::gelu" in report.uncounted
    assert "aten::mul" in report.uncounted
    assert report.uncounted_calls["aten::gelu"] == 1
    assert "layer_norm" in report.by_operator and "layer_norm" not in CORE_OPERATORS
    assert report.total_macs == report.core_macs + report.by_operator["layer_norm"]


class Matmuls(nn.Module):
    def forward(self, a, b, c, bias):
        x = a @ b  # broadcast: (2, 3, 4, 5) @ (5, 6)
        y = torch.baddbmm(bias, c, c.transpose(1, 2))  # (2, 3, 7) @ (2, 7, 3)
        z = torch.bmm(c, c.transpose(1, 2))
        return x.sum() + y.sum() + z.sum()


def test_matmul_variants_including_broadcast_and_baddbmm():
    a, b, c = torch.randn(2, 3, 4, 5), torch.randn(5, 6), torch.randn(2, 3, 7)
    bias = torch.randn(2, 3, 3)
    report = count_flops_fvcore(Matmuls(), (a, b, c, bias))
    assert report.by_operator["matmul"] == 2 * 3 * 4 * 6 * 5
    assert report.by_operator["baddbmm"] == 2 * 3 * 3 * 7
    assert report.by_operator["bmm"] == 2 * 3 * 3 * 7
    assert report.core_macs == count_macs_torch(Matmuls(), (a, b, c, bias))


@pytest.mark.parametrize("name", ["deit_s_like", "swin_t"])
def test_baselines_agree_with_flop_counter_mode(name):
    model = build_baseline(name, img_size=32, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    report = count_flops_fvcore(model, x)
    assert report.core_macs == count_macs_torch(model, x, meta=True)
    assert report.uncounted  # GELU, residual additions...


def test_fcaformer_sdpa_and_explicit_attention_count_the_same():
    fca = pytest.importorskip("fcasearch.models.fca")
    build_model = pytest.importorskip("fcasearch.models.fcaformer").build_model
    from fcasearch.measure.counting import count_macs
    from fcasearch.models import get_spec

    spec = get_spec("fcaformer_tiny", img_size=64, num_classes=10)
    model = build_model(spec).eval()
    x = torch.randn(1, 3, 64, 64)
    sdpa = count_flops_fvcore(model, x)
    with fca.attention_impl(model, "explicit"):
        explicit = count_flops_fvcore(model, x)
    assert "scaled_dot_product_attention" in sdpa.by_operator
    assert "scaled_dot_product_attention" not in explicit.by_operator
    assert sdpa.core_macs == explicit.core_macs == count_macs(spec)
