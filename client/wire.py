"""Wire facts that are not JSON shapes, defined once; the server imports them from here.

The JSON shapes themselves are the pydantic models in schema.py.
"""

from __future__ import annotations

import enum
from typing import get_args

from .schema import SignalName

SIGNAL_NAMES: tuple[str, ...] = get_args(SignalName)


class ErrorCode(enum.StrEnum):
    """Every `error.code` the server sends. The server's error classes take their code from here
    and the client maps each to an exception class (errors.ERRORS_BY_CODE), so the two cannot
    drift; a StrEnum, so it is the plain string on the wire and in metrics labels."""

    # The server's domain errors (service/errors.py), by status.
    INTERNAL_ERROR = "internal_error"  # 500
    UNSUPPORTED_MODEL = "unsupported_model"  # 500: the operator's choice of model
    INVALID_REQUEST = "invalid_request"  # 422
    WEIGHTS_REJECTED = "weights_rejected"  # 422
    NOT_READY = "not_ready"  # 503
    MODEL_LOAD_FAILED = "model_load_failed"  # 503
    STALE_WEIGHT_VERSION = "stale_weight_version"  # 409
    VERSION_CONFLICT = "version_conflict"  # 409: a weight version not above the served one
    TRANSFER_STATE = "transfer_state"  # 409: a transfer call out of order
    LIMIT_EXCEEDED = "limit_exceeded"  # 413
    OVERLOADED = "overloaded"  # 429, with Retry-After
    DEADLINE_EXCEEDED = "deadline_exceeded"  # 504
    GROUP_INCOMPLETE = "group_incomplete"  # 504; also a held sample's `reason`
    CHECKPOINT_PENDING = "checkpoint_pending"  # 504: the watcher's newer step is not loaded yet
    BODY_TIMEOUT = "body_timeout"  # 408
    CLIENT_DISCONNECTED = "client_disconnected"  # 499, which nobody reads
    PATH_NOT_ALLOWED = "path_not_allowed"  # 403
    UPLOAD_NOT_FOUND = "upload_not_found"  # 404
    NO_ADAPTER = "no_adapter"  # 404
    TRANSFER_FAILED = "transfer_failed"  # 502
    # What the HTTP layer answers itself (service/api/errors.py).
    INVALID_BODY = "invalid_body"  # 400: a body that cannot be parsed
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415
    BAD_REQUEST = "bad_request"  # 400
    UNAUTHORIZED = "unauthorized"  # 401
    FORBIDDEN = "forbidden"  # 403
    NOT_FOUND = "not_found"  # 404
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    HTTP_ERROR = "http_error"  # any other status; the client also reads an unreadable body so


# The server's default --group-hold-s: how long it may hold samples of an incomplete group. The
# client listens that long for a held sample's answer when the request names no hold_s.
GROUP_HOLD_S = 120.0

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
    "GROUP_HOLD_S",
    "NO_VALID_MEMBER_SCORE",
    "RUN_KEY_HEADER",
    "RUN_KEY_PARAM",
    "SAFETENSORS_DTYPES",
    "SIGNAL_NAMES",
    "ErrorCode",
    "stand_in_floor",
]
