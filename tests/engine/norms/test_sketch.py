"""The sketch's variance formula, checked by drawing many projection pairs for fixed G.

For G with singular values σ, P_in, P_out independent with N(0, 1/k) entries:
Var‖P_out G P_inᵀ‖²_F / ‖G‖⁴ = 4ρ/k + (2 + 2ρ)/k², ρ = Σσ⁴ / (Σσ²)² (docs/estimator.md).
"""

from __future__ import annotations

import math

import pytest
import torch

from vigor_service.engine.norms.sketch import Projections, draw
from vigor_service.engine.types import Sketch


def relative_variance(g: torch.Tensor, k: int) -> float:
    s2 = torch.linalg.svdvals(g).pow(2)
    rho = float(s2.pow(2).sum() / s2.sum() ** 2)
    return 4 * rho / k + (2 + 2 * rho) / k**2


@pytest.mark.parametrize(("rank", "k"), [(1, 2), (1, 8), (6, 4), (12, 16)])
def test_variance_matches_the_formula(rank, k):
    gen = torch.Generator().manual_seed(rank * 100 + k)
    d_out, d_in, draws = 12, 10, 200_000
    g = torch.randn(d_out, rank, generator=gen, dtype=torch.float64) @ torch.randn(
        rank, d_in, generator=gen, dtype=torch.float64
    )
    p_out = torch.randn(draws, k, d_out, generator=gen, dtype=torch.float64) / math.sqrt(k)
    p_in = torch.randn(draws, k, d_in, generator=gen, dtype=torch.float64) / math.sqrt(k)
    est = (p_out @ g @ p_in.transpose(1, 2)).pow(2).sum((1, 2))
    exact = float(g.pow(2).sum())
    rel = est / exact
    mean, var = float(rel.mean()), float(rel.var())
    want = relative_variance(g, k)
    # The mean within 5 standard errors of 1; the variance within 6% (its own sampling error
    # at 200k draws is ≈ √(κ/draws), a few percent for these heavy-tailed estimates).
    assert abs(mean - 1) < 5 * math.sqrt(want / draws)
    assert var == pytest.approx(want, rel=0.06)


def test_draw_is_stable_and_scaled():
    a = draw(7, "model.layers.0.mlp.up_proj", "in", 64, 300)
    assert torch.equal(a, draw(7, "model.layers.0.mlp.up_proj", "in", 64, 300))
    assert not torch.equal(a, draw(7, "model.layers.0.mlp.up_proj", "out", 64, 300))
    assert not torch.equal(a, draw(8, "model.layers.0.mlp.up_proj", "in", 64, 300))
    assert float(a.pow(2).sum(0).mean()) == pytest.approx(1.0, rel=0.05)  # E[PᵀP] = I


def test_cache_is_bounded_and_redraws_the_same():
    cache = Projections(max_bytes=3 * 8 * 4 * (10 + 20))
    sk = Sketch(4, 1)
    first = cache.get(sk, "a", 10, 20, torch.float64, "cpu")
    for name in "bcdef":
        cache.get(sk, name, 10, 20, torch.float64, "cpu")
    assert cache._bytes <= cache.max_bytes
    again = cache.get(sk, "a", 10, 20, torch.float64, "cpu")  # evicted, drawn again
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
