"""PEFT LoRA adapters: attach one over the base model, replace it, or remove it.

While an adapter is attached, a VIGOR score differentiates only its LoRA parameters (the
reference's rule, applied by `ServedModel.refresh_scored`). The base weights are never modified.
An attach works on a shadow of the served model (new module objects over the same parameters and
buffers), so peft failing half-way through wrapping modules leaves the served model untouched;
only the shadow is served, once every check has passed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import torch

from vigor_client.wire import ADAPTER_CONFIG_KEY

from ..engine.factory import check_engine_supports
from ..engine.params import scored_parameters
from ..errors import NoAdapterError, WeightsRejectedError
from ..serving import ServingSlot
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
    except RecursionError:
        raise WeightsRejectedError([f"{where} nests JSON too deeply"]) from None
    if not isinstance(data, dict):
        raise WeightsRejectedError([f"{where} is not a JSON object"])
    kind = str(data.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise WeightsRejectedError([f"{where}: peft_type {kind} is not LORA (only LoRA is served)"])
    problems = _config_problems(data, where)
    if problems:
        raise WeightsRejectedError(problems)
    known = {f.name for f in dataclasses.fields(LoraConfig)}
    try:
        return LoraConfig(**{k: v for k, v in data.items() if k in known and k != "peft_type"})
    except (TypeError, ValueError) as exc:
        raise WeightsRejectedError([f"{where}: {exc}"]) from None


# Inits that only draw the LoRA matrices, which the adapter's own tensors then replace whole.
LORA_ONLY_INITS = ("gaussian",)


def _config_problems(data: dict[str, Any], where: str) -> list[str]:
    """What peft would accept but cannot be served: base-rewriting options, empty ranks."""
    problems = []
    r = data.get("r", 8)
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        problems.append(f"{where}: r must be a positive integer, not {r!r}")
    init = data.get("init_lora_weights", True)
    if not isinstance(init, bool) and init not in LORA_ONLY_INITS:
        # pissa, olora, corda, loftq, eva ... rewrite the base weights while initialising.
        problems.append(
            f"{where}: init_lora_weights {init!r} would rewrite the base weights; save the "
            "adapter converted to plain LoRA (init_lora_weights true)"
        )
    if data.get("layer_replication"):
        problems.append(f"{where}: layer_replication changes the base model's layers")
    return problems


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
    config_file = confine(str(config_file), allowed)  # each file, not just the directory
    try:
        raw = config_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise WeightsRejectedError([f"{ADAPTER_CONFIG} is not UTF-8 text"]) from None
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
    old_slot = served.model.active_adapter if _is_peft(served.model) else None
    flags = [(p, p.requires_grad) for p in served.model.parameters()]  # peft clears them
    try:
        model = _shadow(served.model)
        if old_slot is not None:
            model.add_adapter(slot, config)
        else:
            model = get_peft_model(model, config, adapter_name=slot)
        targets = TargetMap(get_peft_model_state_dict(model, adapter_name=slot).items())
        checked = check_tensors(targets, tensors, allow_cast=allow_cast)
        check_complete(targets, checked)
        set_peft_model_state_dict(model, checked.tensors, adapter_name=slot)
        if old_slot is not None:
            model.set_adapter(slot)
            model.delete_adapter(old_slot)
        check_engine_supports(served.engine, model, [p for _, p in scored_parameters(model)])
    except Exception as exc:
        for p, flag in flags:
            p.requires_grad_(flag)
        if isinstance(exc, WeightsRejectedError | NoAdapterError):
            raise
        raise WeightsRejectedError(
            [f"the adapter cannot be served: {type(exc).__name__}: {exc}"]
        ) from exc
    # peft leaves the model in training mode: LoRA dropout would make every score random.
    served.model = model.eval()
    served.refresh_scored()
    served.adapter = name
    previous, new_version = serving.bump_version(version)
    return previous, new_version, checked


def _shadow(model: torch.nn.Module) -> torch.nn.Module:
    """New module objects over the very same parameters and buffers (no tensor is copied)."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo=shared)


def detach(serving: ServingSlot, *, version: int | None) -> tuple[int, int]:
    """On the worker: remove the adapter, serving the unchanged base model again."""
    served = serving.require_served()
    if not _is_peft(served.model):
        raise NoAdapterError("no adapter is loaded; the base model is being served")
    serving.next_version(version)
    served.model = _shadow(served.model).unload().eval()  # a failure half-way changes nothing
    served.refresh_scored()
    served.adapter = None
    return serving.bump_version(version)
