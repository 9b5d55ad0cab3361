"""Weights over torch.distributed, at vLLM's paths: init → start → update_weights → finish.

Admin routes (the admin token, or loopback without one). The paths and bodies are vLLM's weight
transfer API; the abort, close and status routes are ours. The tensors themselves travel over the
process group, not HTTP (vigor_client.distributed.WeightSender drives both).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from vigor_client.schema import ErrorResponse, WeightUpdate
from vigor_client.transfer import (
    FinishWeightUpdateRequest,
    InitWeightTransferRequest,
    StartWeightUpdateRequest,
    TransferStatus,
    UpdateWeightsRequest,
    WorldSize,
)

from ..deps import AdminAuth, TransferDep

router = APIRouter(tags=["weight transfer"], dependencies=[AdminAuth])

ERRORS = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in [
        (401, "no admin token sent"),
        (403, "wrong admin token, or a non-loopback client without one"),
        (409, "out of order (no group, no update open, another call busy), or a stale version"),
        (413, "the staged update would pass --max-staged-bytes"),
        (422, "refused tensors; the message names each tensor and the problem"),
        (502, "the group failed (trainer died, went silent or never joined); group closed"),
        (504, "the swap could not start within --admin-timeout-s; nothing was applied"),
    ]
}


@router.post("/init_weight_transfer_engine", responses=ERRORS)
async def init_weight_transfer_engine(
    body: InitWeightTransferRequest, transfer: TransferDep
) -> TransferStatus:
    """Join the trainer's process group as rank `rank_offset`; answers once every rank joined."""
    return await transfer.init(body.init_info)


@router.post("/start_weight_update", responses=ERRORS)
async def start_weight_update(
    transfer: TransferDep, body: StartWeightUpdateRequest | None = None
) -> TransferStatus:
    """Open an update (an unfinished one is dropped); nothing serves until finish."""
    return transfer.start(body or StartWeightUpdateRequest())


@router.post("/update_weights", responses=ERRORS)
async def update_weights(body: UpdateWeightsRequest, transfer: TransferDep) -> TransferStatus:
    """Receive the announced tensors over the group; answers when the broadcast has ended."""
    return await transfer.update(body.update_info)


@router.post("/finish_weight_update", responses=ERRORS)
async def finish_weight_update(
    transfer: TransferDep, body: FinishWeightUpdateRequest | None = None
) -> WeightUpdate:
    """Apply everything staged in one swap, between two scoring passes."""
    return await transfer.finish(body or FinishWeightUpdateRequest())


@router.post("/abort_weight_update", responses=ERRORS)
async def abort_weight_update(transfer: TransferDep) -> TransferStatus:
    """Ours: drop the open update; the group stays."""
    return transfer.abort()


@router.post("/close_weight_transfer_engine", responses=ERRORS)
async def close_weight_transfer_engine(transfer: TransferDep) -> TransferStatus:
    """Ours: drop the open update and leave the group."""
    return transfer.close()


@router.get("/weight_transfer_status", responses=ERRORS)
async def weight_transfer_status(transfer: TransferDep) -> TransferStatus:
    """Ours: the group joined, the update open, what is staged."""
    return transfer.status()


@router.get("/get_world_size", responses=ERRORS)
async def get_world_size() -> WorldSize:
    """vLLM's: the ranks this server takes in a group (one; a trainer's world is 1 + servers)."""
    return WorldSize(world_size=1)


# Admin routes outside /admin: the admin guard refuses them on their headers too.
ADMIN_PATHS = frozenset(route.path for route in router.routes)

NOT_SERVED = (
    "the vLLM weight transfer is not served by this deployment (vigor-serve --ray): each replica "
    "would have to join the trainer's process group. Send the weights through /admin/weights/push "
    "or a bucketed upload, or reload them from a checkpoint (/admin/weights/reload)"
)


def not_served_router() -> APIRouter:
    """Where the runtime has no transfer (the Ray ingress) these paths are not mounted: each
    answers 404 saying so, out of the OpenAPI schema, after the same admin check."""
    refusals = APIRouter(dependencies=[AdminAuth], include_in_schema=False)

    async def refuse() -> None:
        raise HTTPException(404, NOT_SERVED)

    for route in router.routes:
        refusals.add_api_route(route.path, refuse, methods=sorted(route.methods))
    return refusals
