"""Building the served model from settings: load, pick the engine, check it, warm it up."""

from __future__ import annotations

import logging

from ..engine.factory import check_engine_supports, make_engine
from ..engine.types import TokenSequence
from ..models.loader import LoadedModel, load_model, max_sequence_length
from ..settings import Settings
from .served_model import ServedModel
from .token_budget import cpu_token_budget

log = logging.getLogger(__name__)


def load_served(
    settings: Settings, max_batch_tokens: int, loaded: LoadedModel | None = None
) -> ServedModel:
    """On the engine worker. `loaded` skips loading from settings.model (tests pass a model)."""
    s = settings
    if loaded is None:
        loaded = load_model(s.model, cache_dir=s.cache_dir, device=s.device, dtype=s.dtype)
    engine = make_engine(
        s.engine,
        max_batch_tokens=max_batch_tokens,
        gradient_checkpointing=s.gradient_checkpointing,
        budget=s.batch_budget,
    )
    sequence, request = s.max_sequence_tokens, s.max_request_tokens
    model = loaded.model
    if next(model.parameters()).device.type == "cpu" and (sequence is None or request is None):
        budget = cpu_token_budget(model, max_sequence_length(model))
        log.info(
            "CPU token limits from %.1f GiB of memory at %.2f MiB per token: "
            "max_sequence_tokens=%d, max_request_tokens=%d (unless set)",
            budget.memory_bytes / 2**30, budget.per_token_bytes / 2**20,
            budget.max_sequence_tokens, budget.max_request_tokens,
        )  # fmt: skip
        sequence = sequence or budget.max_sequence_tokens
        request = request or budget.max_request_tokens
    served = ServedModel(loaded, engine, max_sequence_tokens=sequence, max_request_tokens=request)
    check_engine_supports(engine, served.model, served.scored)
    warm = served.score([TokenSequence((0,), (1,))], (), 1.0)
    if warm[0].grad_norm is None:
        raise RuntimeError("warm-up produced no gradient norm")
    return served
