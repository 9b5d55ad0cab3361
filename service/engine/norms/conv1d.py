"""GPT-2's transformers Conv1D: a linear layer storing its weight as (d_in, d_out)."""

from __future__ import annotations

from torch import nn
from transformers.pytorch_utils import Conv1D

from .linear import LinearLikeRule
from .registry import register


@register(Conv1D)
class Conv1DRule(LinearLikeRule):
    def dims(self, module: nn.Module) -> tuple[int, int]:
        d_in, d_out = module.weight.shape
        return d_in, d_out
