"""Building the served model from settings: load, pick the engine, check it, warm it up."""

from __future__ import annotations

from ..engine.factory import check_engine_supports, make_engine
from ..engine.types import TokenSequence
from ..models.loader import LoadedModel, load_model
from ..settings import Settings
from .served_model import ServedModel


def load_served(
    settings: Settings, max_batch_tokens: int, loaded: LoadedModel | None = None
) -> ServedModel:
    """On the engine worker. `loaded` skips loading from settings.model (tests pass a model)."""
    s = settings
    if loaded is None:
        loaded = load_model(s.model, cache_dir=s.cache_dir, device=s.device, dtype=s.dtype)
    engine = make_engine(
        s.engine, max_batch_tokens=max_batch_tokens, gradient_checkpointing=s.gradient_checkpointing
    )
    served = ServedModel(loaded, engine, max_sequence_tokens=s.max_sequence_tokens)
    check_engine_supports(engine, served.model, served.scored)
    warm = served.score([TokenSequence((0,), (1,))], (), 1.0)
    if warm[0].grad_norm is None:
        raise RuntimeError("warm-up produced no gradient norm")
    return served
