"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import SlotDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """200 while the process lives."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "loading, failed to load, or draining"}})
async def ready(slot: SlotDep) -> JSONResponse:
    """200 only once the model is loaded and has scored a warm-up sequence."""
    if slot.ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not_ready", "reason": slot.not_ready_reason()}, status_code=503)
