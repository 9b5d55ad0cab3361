"""Refusing parameter sharding (DeepSpeed ZeRO-3, FSDP), whose parameters no one process holds.

Under ZeRO-3 or FSDP process 0's `named_parameters()` are its shards (ZeRO-3: empty
placeholders), so pushing them would send the server wrong weights without a word. TRL gathers
them collectively before each vLLM sync (`_iter_named_params` in `vllm_generation.py`); that path
needs several GPUs to test, which this project's tests do not have, so the callback refuses
instead of sending something untested.
"""

from __future__ import annotations

import os
from typing import Any

FIX = (
    "train with DDP or DeepSpeed ZeRO-1/2, which keep whole parameters on every process "
    "(for a LoRA policy ZeRO-2 usually fits where ZeRO-3 did)"
)


def _from_args(args: Any) -> str | None:
    ds = getattr(args, "hf_deepspeed_config", None)
    if ds is not None and getattr(ds, "is_zero3", lambda: False)():
        return "DeepSpeed ZeRO-3"
    if getattr(args, "fsdp", None):  # TrainingArguments: a list of FSDPOption, empty when off
        return "FSDP"
    # `accelerate launch` with an FSDP config says so in the environment Trainer reads.
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "FSDP"
    return None


def _from_model(model: Any) -> str | None:
    if model is None:
        return None
    for module in model.modules():
        if type(module).__name__ == "FullyShardedDataParallel":  # FSDP 1
            return "FSDP"
    for _, p in model.named_parameters():
        if hasattr(p, "ds_id"):  # a ZeRO-3 partitioned parameter
            return "DeepSpeed ZeRO-3"
        if type(p).__name__ in ("DTensor", "FlatParameter"):  # FSDP 2 / FSDP 1
            return "FSDP"
        if type(getattr(p, "data", None)).__name__ == "DTensor":
            return "FSDP"
    return None


def refuse_sharded(args: Any, model: Any) -> None:
    """Raise, naming the fix, when the trainer shards the parameters across processes."""
    how = _from_args(args) or _from_model(model)
    if how is not None:
        raise NotImplementedError(
            f"VigorWeightSyncCallback cannot send {how}-sharded parameters: each process holds "
            f"only a shard, and gathering them is not supported (untested here). Fix: {FIX}"
        )


__all__ = ["refuse_sharded"]
