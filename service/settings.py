"""The one settings object: command-line flags and VIGOR_* environment variables land here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "default"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "vigor-reward"


class Settings(BaseSettings):
    """Every knob of the server. Each field is also read from VIGOR_<FIELD> (e.g. VIGOR_PORT)."""

    model_config = SettingsConfigDict(env_prefix="VIGOR_", extra="forbid")

    model: str = Field(
        DEFAULT_MODEL,
        description="Local Hugging Face model directory, or 'default' for the embedded "
        "SmolLM2-135M-Instruct.",
    )
    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 exposes the service.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the model runs.")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "float64"] = Field(
        "auto", description="Model dtype; auto is bfloat16 on CUDA with bf16 support, else float32."
    )
    engine: Literal["batched", "loop"] = Field(
        "loop", description="Gradient-norm engine: one batched pass, or the per-completion loop."
    )
    max_batch_tokens: int = Field(
        8192, gt=0, description="Token budget of one micro-batch (padded length × rows)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (long sequences)."
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Where the default model's converted checkpoint is kept.",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for /admin routes; without one they answer loopback only."
    )
    api_token: SecretStr | None = Field(
        None, description="Optional Bearer token required on scoring routes."
    )
    allowed_weights_dir: list[Path] = Field(
        default_factory=list,
        description="Directories weight reloads may read from (repeatable); empty allows any.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")
