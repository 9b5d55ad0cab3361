"""Loading a servable causal LM (and its tokenizer) from a local directory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from ..settings import DEFAULT_MODEL
from .default_model import NAME as DEFAULT_NAME
from .default_model import prepare_default_model

log = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


@dataclass
class LoadedModel:
    name: str
    path: Path
    model: torch.nn.Module
    tokenizer: Any | None


def planned_device_type(device: str) -> str:
    """ "cuda" or "cpu": where a model asked for on `device` will run (without loading it)."""
    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_model_path(model: str, cache_dir: Path) -> tuple[str, Path]:
    if model == DEFAULT_MODEL:
        return DEFAULT_NAME, prepare_default_model(cache_dir)
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"--model {model!r} is not a local Hugging Face model directory (no config.json); "
            "nothing is downloaded from a hub"
        )
    return path.name, path


def load_model(model: str, *, cache_dir: Path, device: str, dtype: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, path = resolve_model_path(model, cache_dir)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dt, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model from {path}: {exc}") from exc
    lm.to(dev).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        log.warning("no usable tokenizer in %s (%s): only token-id requests will work", path, exc)
        tokenizer = None
    log.info("loaded %s from %s on %s as %s", name, path, dev, dt)
    return LoadedModel(name=name, path=path, model=lm, tokenizer=tokenizer)


def max_sequence_length(model: torch.nn.Module) -> int:
    config = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelLoadError("the model config states no maximum sequence length")
