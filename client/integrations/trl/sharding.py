"""Sharded parameters (DeepSpeed ZeRO-3, FSDP): gathered on every process, as TRL does for vLLM.

Under ZeRO-3 or FSDP process 0's `named_parameters()` are its shards (ZeRO-3: empty
placeholders), so sending them would give the server wrong weights without a word. Before each
send every process walks the trainable parameters and gathers each one, as TRL's
`VLLMGeneration._iter_named_params` does before its vLLM sync (gathering is a collective: a
process that skipped it would hang the others); process 0 keeps a CPU copy of each full tensor
and sends the dict. Per parameter, like TRL: ZeRO-3 `GatheredParameters([p])`, FSDP2
`DTensor.full_tensor()`; FSDP1 `summon_full_params(writeback=False)` over the whole model (the
full model on every process for the time of the walk). Names lose the wrappers' prefixes
(`_fsdp_wrapped_module.`, `_checkpoint_wrapped_module.`), as TRL's `_fix_param_name_to_vllm`.

Tested on CPU with real FSDP2 over Gloo on two processes; ZeRO-3 and FSDP1 need GPUs (DeepSpeed,
NCCL) and are not tested here. A peft policy under sharding is refused: TRL merges the adapter
into the gathered base for vLLM, while the server differentiates the adapter alone, whose
sharded LoRA tensors this path does not gather.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

FIX = (
    "train with DDP or DeepSpeed ZeRO-1/2, which keep whole parameters on every process "
    "(for a LoRA policy ZeRO-2 usually fits where ZeRO-3 did)"
)
WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


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
            return "FSDP1"
    for _, p in model.named_parameters():
        if hasattr(p, "ds_id"):  # a ZeRO-3 partitioned parameter
            return "DeepSpeed ZeRO-3"
        if type(p).__name__ == "FlatParameter":
            return "FSDP1"
        if type(p).__name__ == "DTensor" or type(getattr(p, "data", None)).__name__ == "DTensor":
            return "FSDP2"
    return None


def sharded_by(args: Any, model: Any) -> str | None:
    """How the trainer shards the parameters ("DeepSpeed ZeRO-3", "FSDP1", "FSDP2", "FSDP"),
    or None when every process holds them whole. The model tells the kind best; the
    arguments say so before the model is wrapped."""
    return _from_model(model) or _from_args(args)


def refuse_peft_sharded(how: str | None, model: Any) -> None:
    """Raise, naming the fix, for a peft policy whose parameters are sharded."""
    if how is not None and hasattr(model, "peft_config"):
        raise NotImplementedError(
            f"VigorWeightSyncCallback cannot send a {how}-sharded LoRA adapter: gathering "
            f"sharded adapter tensors is not supported (untested here). Fix: {FIX}"
        )


def clean_name(name: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def _zero3_gather(param: Any) -> Any:
    import deepspeed  # present whenever ZeRO-3 is

    return deepspeed.zero.GatheredParameters([param])


def gathered_state_dict(model: Any, rank: int) -> dict[str, Any] | None:
    """Every trainable parameter, whole; call on every process. Process 0 gets CPU copies
    under the model's own names, the others None."""
    kind = _from_model(model)
    out: dict[str, Any] = {}
    whole_model = contextlib.nullcontext()
    if kind == "FSDP1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        whole_model = FSDP.summon_full_params(model, writeback=False)
    with whole_model:
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if kind == "DeepSpeed ZeRO-3":
                with _zero3_gather(param):
                    full = param.data.detach().cpu().clone() if rank == 0 else None
            elif type(param.data).__name__ == "DTensor" or type(param).__name__ == "DTensor":
                full = param.full_tensor().detach()  # FSDP2: an all-gather on every process
                full = full.cpu().clone() if rank == 0 else None
            else:
                full = param.detach().cpu().clone() if rank == 0 else None
            if full is not None:
                out[clean_name(name)] = full
    return out if rank == 0 else None


__all__ = ["gathered_state_dict", "refuse_peft_sharded", "sharded_by"]
