"""An embedding tied to the lm_head: the cross term of the shared weight's two gradients.

‖G_emb + G_head‖² = ‖G_emb‖² + ‖G_head‖² + 2⟨G_emb, G_head⟩; the first two come from the
Embedding and Linear rules. With δ_t the embedding output gradient, h_s the lm_head input and
Bhead = ∂ℓ/∂logits, ⟨G_emb, G_head⟩ = Σ_t Σ_s Bhead[s, x_t]·(δ_t·h_s), over the embedding
positions t that reach the weight (padding and padding_idx excluded).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import batched_dot, tokens
from .embedding import contributing
from .registry import CallContext, TiedRule, register_tied


@register_tied(nn.Embedding, nn.Linear)
class EmbeddingHeadCross(TiedRule):
    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__(modules)
        self._ids: torch.Tensor | None = None
        self._keep: torch.Tensor | None = None
        self._head_input: torch.Tensor | None = None
        self._picked: torch.Tensor | None = None  # Bhead[s, x_t]: (batch, S, T)
        self._h: torch.Tensor | None = None
        self._delta: torch.Tensor | None = None

    @staticmethod
    def role(module: nn.Module) -> str:
        return "embedding" if isinstance(module, nn.Embedding) else "head"

    def forward(self, role: str, x: torch.Tensor, ctx: CallContext) -> None:
        if role == "embedding":
            self._ids = x.reshape(x.shape[0], -1)
            self._keep = contributing(self.modules["embedding"], x, ctx.mask)
        else:
            self._head_input = x

    def backward(self, role: str, grad: torch.Tensor, ctx: CallContext) -> torch.Tensor | None:
        if role == "head":
            self.head_chunk(role, grad, 0, ctx)
            return self.head_done(role, ctx)
        delta = tokens(grad, ctx.mask, ctx.acc_dtype)
        self._delta = delta.masked_fill(~self._keep.unsqueeze(-1), 0)
        return self._cross()

    def head_chunk(self, role: str, grad: torch.Tensor, start: int, ctx: CallContext) -> None:
        """Bhead columns start..start+grad.shape[-1]: pick those of the embedded ids in range."""
        local = self._ids - start
        inside = (local >= 0) & (local < grad.shape[2])
        ids = local.clamp(0, grad.shape[2] - 1).unsqueeze(1).expand(-1, grad.shape[1], -1)
        # Only the columns of the embedded ids matter: keep (and zero padding in) those, not
        # a copy of the whole Bhead.
        picked = tokens(grad.gather(2, ids), ctx.mask, ctx.acc_dtype)
        if not bool(inside.all()):
            picked = picked.masked_fill(~inside.unsqueeze(1), 0)
        # Each id's column lies in exactly one slice, so the others add exact zeros.
        self._picked = picked if self._picked is None else self._picked + picked

    def head_done(self, role: str, ctx: CallContext) -> torch.Tensor | None:
        self._h = tokens(self._head_input, ctx.mask, ctx.acc_dtype)
        self._head_input = None
        return self._cross()

    def _cross(self) -> torch.Tensor | None:
        if self._picked is None or self._delta is None:
            return None
        dots = torch.bmm(self._h, self._delta.transpose(1, 2))  # (batch, S, T): h_s·δ_t
        cross = batched_dot(self._picked, dots)
        self._picked = self._h = self._delta = None
        return 2.0 * cross
