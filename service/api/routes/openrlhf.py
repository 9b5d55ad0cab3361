"""POST /get_reward: OpenRLHF's remote reward protocol (`--remote_rm_url http://host:port/get_reward`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, get_args

from fastapi import APIRouter, Query

from vigor_client.schema import (
    ErrorResponse,
    OpenRLHFRequest,
    OpenRLHFResponse,
    RewardsRequest,
    SignalName,
)

from ...errors import InputProblem, InvalidInputError
from ...openrlhf import plan_request, relocate, to_response
from ..deps import ApiAuth, RuntimeDep, ServedDep

router = APIRouter(tags=["openrlhf"], dependencies=[ApiAuth])

SIGNALS = get_args(SignalName)


def parse_signals(raw: str | None) -> list[str]:
    names = [s.strip() for s in (raw or "").split(",") if s.strip()]
    unknown = [s for s in names if s not in SIGNALS]
    if unknown:
        raise InvalidInputError(
            [InputProblem("signals", f"unknown {unknown}; choose from {', '.join(SIGNALS)}")]
        )
    return names


@router.post(
    "/get_reward",
    responses={
        413: {"model": ErrorResponse, "description": "over a size limit (groups, completions)"},
        422: {"model": ErrorResponse, "description": "a query does not start with its prompt"},
        429: {"model": ErrorResponse, "description": "the queue is full; retry after Retry-After"},
    },
)
async def get_reward(
    body: OpenRLHFRequest,
    runtime: RuntimeDep,
    served: ServedDep,
    signals: Annotated[
        str | None,
        Query(description="Comma-separated extra signals logged as vigor_<name> in extra_logs."),
    ] = None,
) -> OpenRLHFResponse:
    names = parse_signals(signals)
    if not body.query:
        return OpenRLHFResponse(
            rewards=[], scores=[], extra_logs={}, model=served.name, weight_version=served.version
        )
    plan = await asyncio.to_thread(plan_request, body, served.tokenizer)
    request = RewardsRequest(groups=plan.groups, signals=names)
    runtime.limits.check(request)
    try:
        sequences = await asyncio.to_thread(served.tokenization.sequences, request.groups)
    except InvalidInputError as exc:
        raise relocate(exc, plan) from None
    result = await runtime.score(served, request, sequences)
    return to_response(result, plan)
