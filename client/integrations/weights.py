"""Sending a trainer's policy weights to the service (imports torch lazily, through the model)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class VersionClock:
    """Maps a trainer step to a weight version: version = offset + step.

    Shared by the weight-sync callback and the reward function so that the version the callback
    pushes after step s is the one the reward function requires for completions sampled at s.
    """

    offset: int = 0

    def version_for(self, step: int) -> int:
        return self.offset + int(step)


def unwrap(model: Any) -> Any:
    """The module under DDP / accelerate wrappers."""
    while hasattr(model, "module") and model.module is not model:
        model = model.module
    return model


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def trainable_state_dict(model: Any) -> dict[str, Any]:
    """The parameters the optimizer changes, detached, under the model's own names."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def _prune(root: Path, keep: int) -> None:
    steps = sorted(
        (p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()),
        key=lambda p: int(p.name[5:]),
    )
    for old in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def sync_weights(
    client: Any,
    model: Any,
    version: int,
    *,
    checkpoints_dir: str | Path | None = None,
    keep: int = 2,
    **push_kwargs: Any,
) -> Any:
    """Send the policy's trainable weights to the service as `version`.

    Full models push their trainable parameters (a partial update: frozen ones never change);
    peft models push only the LoRA adapter, which the server attaches and then differentiates.
    With `checkpoints_dir` the model is saved to `<dir>/step-<version>` (peft: the adapter) and
    the server reads it from disk; the newest `keep` checkpoints are kept. `client` is a
    VigorClient or VigorReplicas (then every replica gets it and must agree on the version).
    """
    model = unwrap(model)
    if checkpoints_dir is not None:
        root = Path(checkpoints_dir)
        target = root / f"step-{version}"
        model.save_pretrained(target)  # peft saves the adapter alone
        if is_peft(model):
            result = client.load_adapter(str(target.resolve()), version=version)
        else:
            # The trainer's dtype may differ from the served one (fp32 master weights vs bf16).
            result = client.reload_weights(str(target.resolve()), version=version, allow_cast=True)
        _prune(root, keep)
        return result
    if is_peft(model):
        return client.load_adapter(model, version=version)
    push_kwargs.setdefault("progress", False)
    return client.push_weights(trainable_state_dict(model), version=version, **push_kwargs)


__all__ = ["VersionClock", "is_peft", "sync_weights", "trainable_state_dict", "unwrap"]
