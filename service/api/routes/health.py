"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """200 while the process lives."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "loading, failed to load, or draining"}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """200 only once the model is loaded and has scored a warm-up sequence."""
    if runtime.ready:
        return JSONResponse({"status": "ready"})
    if runtime.shutting_down:
        reason = "shutting down"
    elif runtime.load_error:
        reason = f"model failed to load: {runtime.load_error}"
    else:
        reason = "loading"
    return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)
