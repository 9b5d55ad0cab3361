"""Linear layers: weight by the ghost (Gram) or direct form, bias by the summed output gradient.

Per sample, with A (N × d_in) the input and B (N × d_out) the output gradient, the weight gradient
is BᵀA. Ghost form: ‖BᵀA‖² = ⟨AAᵀ, BBᵀ⟩, costing N²(d_in + d_out) and N² memory. Direct form:
materialize BᵀA, costing N·d_in·d_out. peft's LoRA A and B are plain nn.Linear modules and land
here too; peft's scaling sits between lora_B and the sum, so it is already inside B.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .common import sq_sum, tokens
from .gram import cost_factor, gram_inner, masked_gram
from .registry import CallContext, NormRule, register

# Largest per-chunk stack of materialized weight gradients in the direct form (elements).
_DIRECT_CHUNK_ELEMENTS = 1 << 24


def choose_form(n: int, d_in: int, d_out: int, gram_cached: bool, force: str) -> str:
    """Fewer FLOPs wins: ghost c·N²·d_out (+ c·N²·d_in without a shared A-Gram), or N·d_in·d_out.

    c < 1 is what the block rows of a Gram cost relative to the full N×N product. Without
    a shared Gram and c = 1 this is the usual `N(d_in + d_out) < d_in·d_out`; a shared one (k and
    v after q) makes ghost win whenever c·N < d_in. Either way ghost implies c·N < d_in, so a
    kept Gram (c·N² entries) is never larger than the input it replaces.
    """
    if force != "auto":
        return force
    ghost_cost = cost_factor(n) * n * (d_out + (0 if gram_cached else d_in))
    return "ghost" if ghost_cost < d_in * d_out else "direct"


def direct_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖BᵀA‖²_F, a few samples at a time so the stacked gradients stay bounded."""
    per_sample = a.shape[-1] * b.shape[-1]
    step = max(1, _DIRECT_CHUNK_ELEMENTS // per_sample)
    out = []
    for i in range(0, a.shape[0], step):
        out.append(sq_sum(torch.bmm(b[i : i + step].transpose(1, 2), a[i : i + step])))
    return torch.cat(out)


class LinearLikeRule(NormRule):
    """y = x·Wᵀ + b (or x·W + b): the norms do not care which way the weight is stored."""

    param_names = ("weight", "bias")

    def dims(self, module: nn.Module) -> tuple[int, int]:
        raise NotImplementedError

    def capture(self, module: nn.Module, x: torch.Tensor, ctx: CallContext) -> Any:
        d_in, d_out = self.dims(module)
        n = x.numel() // (x.shape[0] * d_in)
        cached = ctx.grams.get(x)
        form = choose_form(n, d_in, d_out, cached is not None, ctx.force_form)
        if form == "direct":
            # The input itself; masked and upcast only at backward time, so a tensor autograd
            # keeps anyway costs no extra memory.
            return form, x
        if cached is None:
            cached = masked_gram(x, ctx.mask, ctx.acc_dtype, ctx.grams, fold=True)
            ctx.grams.put(x, cached)
        return form, cached

    def sq_norms(self, module, saved, grad, ctx, scored):
        out = torch.zeros(grad.shape[0], dtype=torch.float64, device=grad.device)
        form, kept = saved
        b = None
        if "weight" in scored:
            b_mask = ctx.mask if ctx.strict else None  # the kept A side is always zeroed
            if form == "ghost":
                out += gram_inner(kept, masked_gram(grad, b_mask, ctx.acc_dtype, ctx.grams))
            else:
                b = tokens(grad, b_mask, ctx.acc_dtype)
                out += direct_sq(tokens(kept, ctx.mask, ctx.acc_dtype), b)
                b = b if ctx.strict else None
        if "bias" in scored and module.bias is not None:
            b = tokens(grad, ctx.mask, ctx.acc_dtype) if b is None else b
            out += sq_sum(b.sum(dim=1))
        return out


@register(nn.Linear)
class LinearRule(LinearLikeRule):
    def dims(self, module: nn.Linear) -> tuple[int, int]:
        return module.in_features, module.out_features
