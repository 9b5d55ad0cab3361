"""Building the configured gradient-norm engine."""

from __future__ import annotations

from typing import Literal

import torch

from .reference import ReferenceEngine
from .types import NormEngine


def make_engine(
    name: str,
    *,
    max_batch_tokens: int,
    gradient_checkpointing: bool,
    budget: Literal["loop", "tokens"] = "tokens",
) -> NormEngine:
    """`budget` "loop": micro-batches also capped by the loop's modelled peak memory."""
    if name == "loop":
        return ReferenceEngine()
    if name == "batched":
        from .batched import BatchedEngine

        return BatchedEngine(
            max_batch_tokens=max_batch_tokens,
            gradient_checkpointing=gradient_checkpointing,
            budget=budget,
        )
    raise ValueError(f"unknown engine {name!r} (choose 'batched' or 'loop')")


def check_engine_supports(
    engine: NormEngine, model: torch.nn.Module, params: list[torch.nn.Parameter]
) -> None:
    """Refuse at load time a model the engine cannot score over every parameter."""
    if getattr(engine, "name", None) == "batched":
        from .norms.registry import check_supported

        check_supported(model, params)
