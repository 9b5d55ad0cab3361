"""RMSNorm (HF and torch) and LayerNorm rules, x̂ recomputed with the module's own casts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from vigor_service.engine.norms.normalization import HFRMSNormRule
from vigor_service.engine.norms.registry import rule_for

from .oracle import autograd_sq_norms, padded_batch, rule_sq_norms


def _perturbed(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


@pytest.mark.parametrize(
    "build",
    [
        lambda d: LlamaRMSNorm(d, eps=1e-5),
        lambda d: Qwen2RMSNorm(d),
        lambda d: nn.RMSNorm(d, eps=1e-6),
        lambda d: nn.LayerNorm(d),
        lambda d: nn.LayerNorm(d, bias=False),
    ],
)
@pytest.mark.parametrize("extra", [(), (3,)])  # per-head norms (Qwen3's q_norm) see 4-D input
def test_norm_matches_autograd(build, extra):
    torch.manual_seed(0)
    module = _perturbed(build(6).double())
    x, mask = padded_batch((5, 2, 4), 6, extra=extra, seed=1)
    grad, _ = padded_batch((5, 2, 4), 6, extra=extra, seed=2)
    got = rule_sq_norms(module, x, grad, mask)
    torch.testing.assert_close(got, autograd_sq_norms(module, x, grad, mask), rtol=1e-12, atol=0)


def test_hf_rmsnorm_in_bfloat16_uses_the_rounded_x_hat():
    torch.manual_seed(0)
    module = _perturbed(LlamaRMSNorm(16).double()).to(torch.bfloat16)
    x, mask = padded_batch((9, 4), 16, dtype=torch.bfloat16, seed=1)
    grad, _ = padded_batch((9, 4), 16, dtype=torch.bfloat16, seed=2)
    got = rule_sq_norms(module, x, grad, mask, acc=torch.float32)
    # Exact sums of the bf16 products the module's gradient is made of, done in float64.
    x_hat = HFRMSNormRule().normalized(module, x.nan_to_num()).double()
    want = torch.stack(
        [(grad[i, mask[i]].double() * x_hat[i, mask[i]]).sum(0).pow(2).sum() for i in range(2)]
    )
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_hf_rmsnorm_copies_found_by_source():
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    assert isinstance(rule_for(Qwen3RMSNorm(4)), HFRMSNormRule)

    class GemmaLikeRMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(4))

        def forward(self, x):
            return x * (1.0 + self.weight)

    assert rule_for(GemmaLikeRMSNorm()) is None
