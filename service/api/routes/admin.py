"""/admin: the weight plane over HTTP. Every route needs the admin token (or loopback, without one).

Tensor bodies are the safetensors byte format (Content-Type: application/octet-stream).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from vigor_client.schema import (
    AdapterRequest,
    CommitRequest,
    ErrorResponse,
    ReloadRequest,
    UploadStatus,
    WeightUpdate,
)

from ...errors import WeightsRejectedError
from ..deps import AdminAuth, BodyDep, WeightsDep, incoming_body

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminAuth])

ERRORS = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in [
        (401, "no admin token sent"),
        (403, "wrong admin token, a non-loopback client without one, or a disallowed path"),
        (409, "the version is not above the served one (current_weight_version says it)"),
        (413, "staged pushes would pass --max-staged-bytes"),
        (422, "refused weights; the message names the tensor and the problem"),
        (504, "not done within --admin-timeout-s; nothing was applied"),
    ]
}
SAFETENSORS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
# The routes whose safetensors bodies stream into the weight plane, bounded by its staging limit
# instead of --max-request-bytes (every other admin body, JSON, is under that limit).
TENSOR_BODY_PATH = re.compile(r"/admin/(weights/push|weights/uploads/[^/]+/buckets|adapter)")


def streams_tensors(scope) -> bool:
    kind = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
    return kind == b"application/octet-stream" and bool(TENSOR_BODY_PATH.fullmatch(scope["path"]))


Version = Annotated[int | None, Query(ge=0, description="New weight version; default +1.")]


@router.post("/weights/reload", responses=ERRORS)
async def reload_weights(body: ReloadRequest, weights: WeightsDep) -> WeightUpdate:
    """Load a checkpoint from the server's disk into the served model."""
    return await weights.reload(body)


@router.post("/weights/push", responses=ERRORS, openapi_extra=SAFETENSORS_BODY)
async def push_weights(
    body: BodyDep, weights: WeightsDep, version: Version = None, full: bool = False
) -> WeightUpdate:
    """Apply the tensors of one safetensors body (small models; large ones use uploads)."""
    return await weights.push(body, version, full)


@router.post("/weights/uploads", status_code=201, responses=ERRORS)
async def create_upload(weights: WeightsDep) -> UploadStatus:
    """Open a bucketed push; it is dropped after --upload-ttl-s without a bucket."""
    return weights.create_upload()


@router.post(
    "/weights/uploads/{upload_id}/buckets", responses=ERRORS, openapi_extra=SAFETENSORS_BODY
)
async def stage_bucket(upload_id: str, body: BodyDep, weights: WeightsDep) -> UploadStatus:
    """Validate and stage one bucket; nothing is served until the commit."""
    return await weights.stage(upload_id, body)


@router.post("/weights/uploads/{upload_id}/commit", responses=ERRORS)
async def commit_upload(
    upload_id: str, weights: WeightsDep, body: CommitRequest | None = None
) -> WeightUpdate:
    """Apply everything staged in one swap."""
    return await weights.commit(upload_id, body or CommitRequest())


@router.delete("/weights/uploads/{upload_id}", responses=ERRORS)
async def abort_upload(upload_id: str, weights: WeightsDep) -> UploadStatus:
    """Drop the staged data."""
    return weights.abort(upload_id)


@router.post(
    "/adapter",
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": AdapterRequest.model_json_schema()},
                **SAFETENSORS_BODY["requestBody"]["content"],
            },
        }
    },
)
async def load_adapter(
    request: Request,
    weights: WeightsDep,
    version: Version = None,
    name: Annotated[str | None, Query(description="Pushed adapters: shown in /v1/model.")] = None,
    allow_cast: bool = True,
) -> WeightUpdate:
    """Attach a PEFT LoRA adapter: JSON {"path": dir} on the server's disk, or a safetensors body
    with the adapter_config JSON in its __metadata__["adapter_config"]."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/octet-stream":
        return await weights.push_adapter(incoming_body(request), version, name, allow_cast)
    if kind != "application/json":
        raise WeightsRejectedError(
            ["send application/json {path: ...} or an application/octet-stream safetensors body"]
        )
    try:
        body = AdapterRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None
    return await weights.load_adapter(body)


@router.delete("/adapter", responses=ERRORS)
async def unload_adapter(weights: WeightsDep, version: Version = None) -> WeightUpdate:
    """Remove the adapter and serve the base model again."""
    return await weights.unload_adapter(version)
