"""POST /v1/rewards: the validated body goes to the scoring pipeline."""

from __future__ import annotations

from fastapi import APIRouter, Request

from vigor_client.schema import ErrorResponse, RewardsRequest, RewardsResponse

from ..deps import ApiAuth, CallerDep, PipelineDep

router = APIRouter(tags=["rewards"], dependencies=[ApiAuth])

ERRORS = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in [
        (409, "the served weights are older than min_weight_version"),
        (413, "over a size limit (body bytes, groups, completions, device memory)"),
        (422, "invalid input; the message names the group, completion and field"),
        (429, "the queue is full; retry after the Retry-After header's seconds"),
        (503, "the model is not loaded yet, or the server is shutting down"),
        (504, "scoring could not start before deadline_s"),
    ]
}


@router.post("/v1/rewards", responses=ERRORS)
async def rewards(
    body: RewardsRequest, pipeline: PipelineDep, request: Request, caller: CallerDep
) -> RewardsResponse:
    return await pipeline.score(body, gone=request.is_disconnected, caller=caller)
