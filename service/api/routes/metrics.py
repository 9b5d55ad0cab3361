"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ...metrics import CONTENT_TYPE
from ..deps import ApiAuth, RuntimeDep

router = APIRouter(tags=["metrics"], dependencies=[ApiAuth])


@router.get("/metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    """Requests, latencies, tokens scored, queue depth, weight version and weight-plane timings."""
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)
