"""POST /v1/rewards: validate, tokenize, hand to the engine worker, answer."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from vigor_client.schema import ErrorResponse, RewardsRequest, RewardsResponse

from ..deps import ApiAuth, RuntimeDep, ServedDep

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
async def rewards(body: RewardsRequest, runtime: RuntimeDep, served: ServedDep) -> RewardsResponse:
    runtime.limits.check(body)
    # Tokenizing a large request takes a while: keep it off the event loop.
    sequences = await asyncio.to_thread(served.tokenization.sequences, body.groups)
    # Only after validation: a bad request answers 422 at once, not after waiting for weights.
    if body.min_weight_version is not None:
        await runtime.wait_for_version(body.min_weight_version, body.wait_s)
    return await runtime.score(served, body, sequences)
