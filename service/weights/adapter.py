"""PEFT LoRA adapters: attach one over the base model, replace it, or remove it.

While an adapter is attached, a VIGOR score differentiates only its LoRA parameters (the
reference's rule, applied by `ServedModel.refresh_scored`). The base weights are never modified:
attaching wraps modules, removing unwraps them, so a failed attach rolls back to exactly the
model that was served.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import torch

from vigor_client.wire import ADAPTER_CONFIG_KEY

from ..engine.factory import check_engine_supports
from ..errors import NoAdapterError, WeightsRejectedError
from ..serving import ServedModel, ServingSlot
from .sources import ADAPTER_CONFIG, ADAPTER_WEIGHTS, confine, read_file
from .validate import Checked, TargetMap, check_complete, check_tensors, nonfinite_problem

METADATA_KEY = ADAPTER_CONFIG_KEY  # where a pushed adapter's safetensors carries its config


def parse_config(raw: dict[str, Any] | str, where: str):
    """A LoraConfig from adapter_config.json's content; unknown keys are ignored as peft does."""
    from peft import LoraConfig

    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except ValueError as exc:
        raise WeightsRejectedError([f"{where} is not JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise WeightsRejectedError([f"{where} is not a JSON object"])
    kind = str(data.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise WeightsRejectedError([f"{where}: peft_type {kind} is not LORA (only LoRA is served)"])
    known = {f.name for f in dataclasses.fields(LoraConfig)}
    try:
        return LoraConfig(**{k: v for k, v in data.items() if k in known and k != "peft_type"})
    except (TypeError, ValueError) as exc:
        raise WeightsRejectedError([f"{where}: {exc}"]) from None


def read_adapter_dir(
    path: str, allowed: list[Path], cancel: threading.Event | None = None
) -> tuple[Any, dict[str, torch.Tensor]]:
    real = confine(path, allowed)
    if not real.is_dir():
        raise WeightsRejectedError([f"{path} is not a directory"])
    config_file, weights = real / ADAPTER_CONFIG, real / ADAPTER_WEIGHTS
    for needed in (config_file, weights):
        if not needed.is_file():
            raise WeightsRejectedError(
                [f"{path} has no {needed.name} (a PEFT adapter saved as safetensors)"]
            )
    try:
        raw = config_file.read_text()
    except OSError as exc:
        raise WeightsRejectedError([f"cannot read {config_file}: {exc}"]) from None
    config = parse_config(raw, ADAPTER_CONFIG)
    tensors = read_file(confine(str(weights), allowed), cancel).tensors
    return config, tensors


def precheck(tensors: dict[str, torch.Tensor]) -> None:
    """The data checks that need no model (run off the worker)."""
    problems = [
        f"tensor {name!r}: {why}" for name, t in tensors.items() if (why := nonfinite_problem(t))
    ]
    if problems:
        raise WeightsRejectedError(problems)


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


class AdapterSlots:
    """Fresh internal adapter names, so a replacement can sit beside the adapter it replaces."""

    def __init__(self) -> None:
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"vigor{self._n}"


def attach(
    serving: ServingSlot,
    config: Any,
    tensors: dict[str, torch.Tensor],
    *,
    slot: str,
    name: str,
    version: int | None,
    allow_cast: bool,
) -> tuple[int, int, Checked]:
    """On the worker: attach (or replace with) the adapter; roll back on any failure."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    serving.next_version(version)  # refused before the model is touched
    served = serving.require_served()
    model = served.model
    old_slot = model.active_adapter if _is_peft(model) else None
    if old_slot is not None:
        model.add_adapter(slot, config)
    else:
        model = get_peft_model(model, config, adapter_name=slot)
    try:
        targets = TargetMap(get_peft_model_state_dict(model, adapter_name=slot).items())
        checked = check_tensors(targets, tensors, allow_cast=allow_cast)
        check_complete(targets, checked)
        set_peft_model_state_dict(model, checked.tensors, adapter_name=slot)
        if old_slot is not None:
            model.set_adapter(slot)
            model.delete_adapter(old_slot)
        served.model = model
        served.refresh_scored()
        check_engine_supports(served.engine, served.model, served.scored)
    except Exception as exc:
        _roll_back(served, model, slot, old_slot)
        if isinstance(exc, WeightsRejectedError | NoAdapterError):
            raise
        raise WeightsRejectedError([f"the adapter cannot be served: {exc}"]) from exc
    served.adapter = name
    previous, new_version = serving.bump_version(version)
    return previous, new_version, checked


def _roll_back(served: ServedModel, model, slot: str, old_slot: str | None) -> None:
    if old_slot is None:
        served.model = model.unload() if _is_peft(model) else model
    else:
        if slot in model.peft_config:
            model.set_adapter(old_slot)
            model.delete_adapter(slot)
        served.model = model
    served.refresh_scored()


def detach(serving: ServingSlot, *, version: int | None) -> tuple[int, int]:
    """On the worker: remove the adapter, serving the unchanged base model again."""
    served = serving.require_served()
    if not _is_peft(served.model):
        raise NoAdapterError("no adapter is loaded; the base model is being served")
    serving.next_version(version)
    served.model = served.model.unload()
    served.refresh_scored()
    served.adapter = None
    return serving.bump_version(version)
