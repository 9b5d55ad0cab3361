"""POST /get_reward: OpenRLHF's remote reward protocol (`--remote_rm_url http://host:port/get_reward`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from vigor_client.schema import ErrorResponse, OpenRLHFRequest, OpenRLHFResponse
from vigor_client.wire import SIGNAL_NAMES

from ...errors import InputProblem, InvalidInputError
from ..deps import ApiAuth, PipelineDep

router = APIRouter(tags=["openrlhf"], dependencies=[ApiAuth])


def parse_signals(raw: str | None) -> list[str]:
    names = [s.strip() for s in (raw or "").split(",") if s.strip()]
    unknown = [s for s in names if s not in SIGNAL_NAMES]
    if unknown:
        raise InvalidInputError(
            [InputProblem("signals", f"unknown {unknown}; choose from {', '.join(SIGNAL_NAMES)}")]
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
    pipeline: PipelineDep,
    signals: Annotated[
        str | None,
        Query(description="Comma-separated extra signals logged as vigor_<name> in extra_logs."),
    ] = None,
) -> OpenRLHFResponse:
    return await pipeline.score_openrlhf(body, parse_signals(signals))
