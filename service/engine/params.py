"""Which parameters a VIGOR score differentiates."""

from __future__ import annotations

import torch


def scored_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Every parameter, or only the LoRA ones when the model carries LoRA adapters.

    The reference trainer's rule: a parameter is a LoRA parameter when its name contains "lora".
    `named_parameters()` yields a tied parameter (embedding and lm_head) once: counted once.
    """
    named = list(model.named_parameters())
    lora = [(n, p) for n, p in named if "lora" in n]
    return lora or named
