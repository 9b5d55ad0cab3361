"""The opt-in sketched estimator of a Linear weight's per-sample squared gradient norm.

Per sample, with A (N × d_in) the input and B (N × d_out) the output gradient, G = BᵀA. With
P_in (k × d_in) and P_out (k × d_out) independent, entries N(0, 1/k), E[PᵀP] = I on each side, so

    E ‖P_out G P_inᵀ‖²_F = tr(Gᵀ E[P_outᵀP_out] G E[P_inᵀP_in]) = ‖G‖²_F,

and P_out G P_inᵀ = (B P_outᵀ)ᵀ(A P_inᵀ) costs N·k·(d_in + d_out) + N·k² instead of
N·d_in·d_out (LoGra's two-sided projection). A is projected in the forward hook, so only the
k-wide A·P_inᵀ is kept; B in the backward hook. Padded rows are zeroed after projecting on both
sides, so padding (finite or not) never reaches a real sample. Biases stay exact.

Projections depend on (seed, layer name, k, dims) only, never on the batch: a sample's estimate
is the same alone, among others, or padded. The engine keeps them in a bounded cache.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..types import Sketch
from .common import flat, sq_sum, token_mask, tokens
from .registry import CallContext, NormRule

# Bytes of projections the engine keeps (k = 512 on SmolLM2-135M's 210 Linears is ~0.4 GiB
# in float32); past it the least recently used are dropped and redrawn when needed again.
DEFAULT_CACHE_BYTES = 1 << 30


def _stream(seed: int, layer: str, side: str, k: int, d: int) -> int:
    # A stable hash (not Python's salted hash()): the same numbers in every process.
    key = f"{seed}|{layer}|{side}|{k}|{d}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def draw(seed: int, layer: str, side: str, k: int, d: int) -> torch.Tensor:
    """k × d Gaussian, entries N(0, 1/k), float64 on the CPU so every device gets the same draw."""
    gen = torch.Generator().manual_seed(_stream(seed, layer, side, k, d))
    return torch.randn(k, d, generator=gen, dtype=torch.float64) / k**0.5


class Projections:
    """(P_in, P_out) per (seed, layer, k, dims, dtype, device); least recently used go first."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._kept: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._bytes = 0

    def get(
        self, sketch: Sketch, layer: str, d_in: int, d_out: int, dtype, device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (sketch.seed, sketch.k, layer, d_in, d_out, dtype, str(device))
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
            return found
        pair = tuple(
            draw(sketch.seed, layer, side, sketch.k, d).to(dtype=dtype, device=device)
            for side, d in (("in", d_in), ("out", d_out))
        )
        size = sum(p.numel() * p.element_size() for p in pair)
        self._kept[key] = pair
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._kept) > 1:
            _, old = self._kept.popitem(last=False)
            self._bytes -= sum(p.numel() * p.element_size() for p in old)
        return pair


def project(
    t: torch.Tensor, p: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """(batch, N, k) = t·pᵀ with padded rows set to exactly zero (after: NaN·p is masked too)."""
    out = flat(t, dtype) @ p.T
    if mask is None:
        return out
    return out.masked_fill(~token_mask(mask, t).unsqueeze(-1), 0)


@dataclass
class _Kept:
    a: torch.Tensor  # (batch, N, k): A·P_inᵀ, padding zeroed
    p_out: torch.Tensor
    b: torch.Tensor | None = None  # (batch, N, k): B·P_outᵀ, summed over column slices


class SketchLinearRule(NormRule):
    """A Linear-like layer's weight by the sketch, its bias exactly (the exact rule's dims)."""

    param_names = ("weight", "bias")

    def __init__(self, exact: NormRule, layer: str, sketch: Sketch, projections: Projections):
        self.exact, self.layer, self.sketch, self.projections = exact, layer, sketch, projections

    def capture(self, module: nn.Module, x: torch.Tensor, ctx: CallContext) -> Any:
        d_in, d_out = self.exact.dims(module)
        p_in, p_out = self.projections.get(
            self.sketch, self.layer, d_in, d_out, ctx.acc_dtype, x.device
        )
        return _Kept(project(x, p_in, ctx.mask, ctx.acc_dtype), p_out)

    def sq_norms(self, module, saved: _Kept, grad, ctx, scored) -> torch.Tensor:
        out = self.column_slice(module, saved, grad, 0, ctx, scored)
        return out + self.columns_done(module, saved, ctx, scored)

    def column_slice(self, module, saved: _Kept, grad, start, ctx, scored) -> torch.Tensor:
        """Output columns start..start+width: B·P_outᵀ is a sum over columns, so slices add up."""
        out = torch.zeros(grad.shape[0], dtype=torch.float64, device=grad.device)
        if "weight" in scored:
            p = saved.p_out[:, start : start + grad.shape[-1]]
            b = project(grad, p, ctx.mask, ctx.acc_dtype)
            saved.b = b if saved.b is None else saved.b + b
        if "bias" in scored and module.bias is not None:
            out += sq_sum(tokens(grad, ctx.mask, ctx.acc_dtype).sum(dim=1))
        return out

    def columns_done(self, module, saved: _Kept, ctx, scored) -> torch.Tensor:
        if saved.b is None:
            return torch.zeros(saved.a.shape[0], dtype=torch.float64, device=saved.a.device)
        est = sq_sum(torch.bmm(saved.b.transpose(1, 2), saved.a))  # (batch, k, k) per sample
        saved.b = None
        return est
