"""Shared helpers of the norm rules: token-major views with padding zeroed, per-sample sums."""

from __future__ import annotations

import torch


def token_mask(mask: torch.Tensor, t: torch.Tensor, feature_dims: int = 1) -> torch.Tensor:
    """The (batch, positions) mask broadcast over any extra dims of t, flattened to (batch, N)."""
    extra = t.shape[2 : t.dim() - feature_dims]
    if not extra:
        return mask
    return (
        mask.reshape(*mask.shape, *([1] * len(extra)))
        .expand(*t.shape[: 2 + len(extra)])
        .reshape(mask.shape[0], -1)
    )


def tokens(t: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """t as (batch, N, features) in `dtype` with padded positions set to exactly zero.

    Zeroing (rather than trusting the model to leave zeros there) matters: a NaN or a stray value
    at a padded position would enter a Gram through 0·x products. `mask` None means no padding.
    """
    flat = t.reshape(t.shape[0], -1, t.shape[-1]).to(dtype)
    if mask is None:
        return flat
    return flat.masked_fill(~token_mask(mask, t).unsqueeze(-1), 0)


def flat(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t as (batch, N, features) in `dtype`, padding left as it is."""
    return t.reshape(t.shape[0], -1, t.shape[-1]).to(dtype)


def batched_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample Σ x⊙y over all but the batch dim, as float64 (batch,); no product temporary."""
    n = x[0].numel()
    return torch.bmm(x.reshape(-1, 1, n), y.reshape(-1, n, 1)).reshape(-1).to(torch.float64)


def sq_sum(t: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of squares as float64, (batch,), summed in t's own (float32+) dtype."""
    return t.reshape(t.shape[0], -1).square().sum(dim=1).to(torch.float64)
