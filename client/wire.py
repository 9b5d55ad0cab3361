"""Wire facts that are not JSON shapes, defined once; the server imports them from here.

The JSON shapes themselves are the pydantic models in schema.py.
"""

from __future__ import annotations

from typing import get_args

from .schema import SignalName

SIGNAL_NAMES: tuple[str, ...] = get_args(SignalName)

# A pushed LoRA adapter carries its adapter_config.json content under this __metadata__ key.
ADAPTER_CONFIG_KEY = "adapter_config"

# safetensors dtype codes by torch dtype name (without the "torch." prefix).
SAFETENSORS_DTYPES: dict[str, str] = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}  # fmt: skip

# A held group's key lives in its caller's namespace: the bearer token it sends and this run key
# (a header, or `?run=` on /get_reward, whose URL is all OpenRLHF lets one set). Two runs that
# share a server and a token but not a run key can never join, supersede or configure each
# other's groups. An unguessable run key (a UUID per run) also keeps out a caller who does.
RUN_KEY_HEADER = "X-Vigor-Run"
RUN_KEY_PARAM = "run"

# The reference VIGOR trainer's stand-in score for a completion without one (VIGOR.md, rule 4):
# `min − BELOW_WORST` of its group, or NO_VALID_MEMBER_SCORE when no member has a score.
NO_VALID_MEMBER_SCORE = -20.0
BELOW_WORST = 1e-3


def stand_in_floor(scores: list[float | None]) -> float:
    """The score the reference substitutes for a member of this group that has none."""
    valid = [s for s in scores if s is not None]
    return min(valid) - BELOW_WORST if valid else NO_VALID_MEMBER_SCORE


__all__ = [
    "ADAPTER_CONFIG_KEY",
    "BELOW_WORST",
    "NO_VALID_MEMBER_SCORE",
    "RUN_KEY_HEADER",
    "RUN_KEY_PARAM",
    "SAFETENSORS_DTYPES",
    "SIGNAL_NAMES",
    "stand_in_floor",
]
