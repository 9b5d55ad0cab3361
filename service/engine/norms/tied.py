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
            ids = self._ids.unsqueeze(1).expand(-1, grad.shape[1], -1)
            # Only the columns of the embedded ids matter: keep (and zero padding in) those, not
            # a copy of the whole Bhead.
            self._picked = tokens(grad.gather(2, ids), ctx.mask, ctx.acc_dtype)
            self._h = tokens(self._head_input, ctx.mask, ctx.acc_dtype)
            self._head_input = None
        else:
            delta = tokens(grad, ctx.mask, ctx.acc_dtype)
            self._delta = delta.masked_fill(~self._keep.unsqueeze(-1), 0)
        if self._picked is None or self._delta is None:
            return None
        dots = torch.bmm(self._h, self._delta.transpose(1, 2))  # (batch, S, T): h_s·δ_t
        cross = batched_dot(self._picked, dots)
        self._picked = self._h = self._delta = None
        return 2.0 * cross
