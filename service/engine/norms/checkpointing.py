"""Gradient checkpointing for one scoring pass, leaving the model as it was found.

HF checkpoints a decoder layer only when the layer has `gradient_checkpointing` set and is in
training mode. Rather than `model.gradient_checkpointing_enable()` plus `model.train()` (which
would switch dropout on everywhere and leave an input-grad hook behind), this sets the flag, the
checkpoint function and the training bit on the checkpointable layers alone, children untouched,
and restores all three afterwards, exceptions included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial

from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.modeling_layers import GradientCheckpointingLayer

from ..errors import UnsupportedModelError

_MISSING = object()
_ATTRS = ("gradient_checkpointing", "_gradient_checkpointing_func")


@contextlib.contextmanager
def checkpointing(model: nn.Module, enabled: bool, use_reentrant: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise UnsupportedModelError(
            f"gradient checkpointing asked for, but {type(model).__name__} has no checkpointable "
            "layers"
        )
    saved = [(m, m.training, [m.__dict__.get(a, _MISSING) for a in _ATTRS]) for m in layers]
    try:
        for m in layers:
            m.gradient_checkpointing = True
            m._gradient_checkpointing_func = partial(checkpoint, use_reentrant=use_reentrant)
            m.training = True
        yield
    finally:
        for m, training, values in saved:
            m.training = training
            for attr, value in zip(_ATTRS, values, strict=True):
                if value is _MISSING:
                    m.__dict__.pop(attr, None)
                else:
                    setattr(m, attr, value)
