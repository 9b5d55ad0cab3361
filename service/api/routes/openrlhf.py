"""POST /get_reward: OpenRLHF's remote reward protocol (`--remote_rm_url http://host:port/get_reward`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from vigor_client.schema import ErrorResponse, OpenRLHFRequest, OpenRLHFResponse
from vigor_client.wire import SIGNAL_NAMES

from ...errors import InputProblem, InvalidInputError
from ..deps import ApiAuth, CallerDep, PipelineDep

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
        422: {
            "model": ErrorResponse,
            "description": "a query does not start with its prompt, or a lone sample without "
            "?group_size",
        },
        504: {"model": ErrorResponse, "description": "its group did not complete within hold_s"},
        429: {"model": ErrorResponse, "description": "the queue is full; retry after Retry-After"},
    },
)
async def get_reward(
    body: OpenRLHFRequest,
    pipeline: PipelineDep,
    request: Request,
    caller: CallerDep,
    signals: Annotated[
        str | None,
        Query(description="Comma-separated extra signals logged as vigor_<name> in extra_logs."),
    ] = None,
    group_size: Annotated[
        int | None,
        Query(
            ge=1,
            description="Samples per prompt (--rollout.n_samples_per_prompt): samples are held "
            "until their prompt's group is complete, then ranked together.",
        ),
    ] = None,
    hold_s: Annotated[
        float | None,
        Query(
            gt=0,
            le=3600,
            description="Give up on an incomplete group after this long (at most the server's "
            "max_group_hold_s).",
        ),
    ] = None,
    run: Annotated[
        str | None,
        Query(
            description="Run key: held groups live in the namespace of the bearer token and "
            "this key (the X-Vigor-Run header, for clients that can set one), so another run "
            "on this server never joins them. Use an unguessable one (a UUID per run).",
        ),
    ] = None,
) -> OpenRLHFResponse:
    return await pipeline.score_openrlhf(
        body, parse_signals(signals), group_size, hold_s, gone=request.is_disconnected,
        caller=caller,
    )  # fmt: skip
