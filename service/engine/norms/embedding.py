"""nn.Embedding: per sample, Σ_v ‖Σ_{t: x_t = v} δ_t‖² over the rows the sample touches.

Positions holding the embedding's `padding_idx` are skipped: torch never writes a gradient into
that row. HF builds the embedding with padding_idx = pad_token_id, and SmolLM2's pad token is
<|im_end|>, which does occur inside completions.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .common import token_mask, tokens
from .registry import CallContext, NormRule, register


def contributing(
    module: nn.Embedding, ids: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """bool (batch, N): positions whose output gradient reaches the weight."""
    flat = ids.reshape(ids.shape[0], -1)
    keep = torch.ones_like(flat, dtype=torch.bool) if mask is None else token_mask(mask, ids, 0)
    if module.padding_idx is not None:
        keep = keep & (flat != module.padding_idx)
    return keep


@register(nn.Embedding)
class EmbeddingRule(NormRule):
    param_names = ("weight",)

    def check(self, module: nn.Embedding) -> None:
        # max_norm renormalizes the weight in place during forward; scale_grad_by_freq scales by
        # counts over the whole batch, which would make one sample's norm depend on the others.
        if module.max_norm is not None or module.scale_grad_by_freq:
            raise UnsupportedModelError(
                "nn.Embedding with max_norm or scale_grad_by_freq has no per-sample norm rule"
            )

    def capture(self, module: nn.Embedding, ids: torch.Tensor, ctx: CallContext) -> torch.Tensor:
        return ids

    def sq_norms(self, module, ids, grad, ctx, scored):
        batch = ids.shape[0]
        delta = tokens(grad, ctx.mask, ctx.acc_dtype)
        keep = contributing(module, ids, ctx.mask)
        # One key per (sample, vocabulary row): sum each sample's gradients per row, then square.
        keys = torch.arange(batch, device=ids.device).unsqueeze(1) * module.num_embeddings
        keys = (keys + ids.reshape(batch, -1))[keep]
        rows, inverse = torch.unique(keys, return_inverse=True)
        summed = delta.new_zeros(rows.shape[0], delta.shape[-1]).index_add_(0, inverse, delta[keep])
        out = torch.zeros(batch, dtype=torch.float64, device=delta.device)
        sample = torch.div(rows, module.num_embeddings, rounding_mode="floor")
        return out.index_add_(0, sample, summed.square().sum(dim=1).to(torch.float64))
