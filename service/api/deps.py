"""Typed dependencies so handlers read as plain signatures."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from vigor_client.wire import RUN_KEY_HEADER, RUN_KEY_PARAM

from ..errors import TransferStateError
from ..scoring import ScoringPipeline
from ..scoring.held import Caller
from ..serving import ModelFacts, ServingSlot
from ..settings import Settings
from ..weights import IncomingBody, WeightTransfer
from .body_limit import BODY_BYTES_KEY
from .seams import ServingRuntime, WeightFront


def get_runtime(request: Request) -> ServingRuntime:
    return request.app.state.runtime


RuntimeDep = Annotated[ServingRuntime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_slot(runtime: RuntimeDep) -> ServingSlot:
    return runtime.slot


SlotDep = Annotated[ServingSlot, Depends(get_slot)]


def get_served(slot: SlotDep) -> ModelFacts:
    return slot.require_served()


ServedDep = Annotated[ModelFacts, Depends(get_served)]


def get_pipeline(runtime: RuntimeDep) -> ScoringPipeline:
    return runtime.pipeline


PipelineDep = Annotated[ScoringPipeline, Depends(get_pipeline)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_refusal(request: Request, expected: str) -> HTTPException | None:
    """401 when no token was sent, 403 when a wrong one was; compared in constant time."""
    given = bearer_token(request)
    if given is None:
        return HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return HTTPException(403, "wrong bearer token")
    return None


def check_token(request: Request, expected: str) -> None:
    if (refusal := token_refusal(request, expected)) is not None:
        raise refusal


def require_api_token(request: Request, settings: SettingsDep) -> None:
    if settings.api_token is not None:
        check_token(request, settings.api_token.get_secret_value())


ApiAuth = Depends(require_api_token)


def caller_of(request: Request) -> Caller:
    """Whose namespace this request's held groups live in (bearer token and run key), and the
    size of its body (read whole by the body limit, which records it in the scope)."""
    token = bearer_token(request) or ""
    run = request.headers.get(RUN_KEY_HEADER) or request.query_params.get(RUN_KEY_PARAM) or ""
    namespace = hashlib.blake2b(
        f"{len(token)}:{token}{run}".encode("utf-8", "surrogatepass"), digest_size=16
    ).hexdigest()
    return Caller(namespace=namespace, body_bytes=request.scope.get(BODY_BYTES_KEY, 0))


CallerDep = Annotated[Caller, Depends(caller_of)]


def is_loopback(host: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def admin_refusal(request: Request, settings: Settings) -> HTTPException | None:
    """The admin token when one is configured; without one, loopback clients only.

    Also checked by api/admin_guard.py before any body is read.
    """
    if settings.admin_token is not None:
        return token_refusal(request, settings.admin_token.get_secret_value())
    if not is_loopback(request.client.host if request.client else None):
        return HTTPException(
            403,
            "admin routes answer only loopback clients when no admin token is configured "
            "(--admin-token)",
        )
    return None


def require_admin(request: Request, settings: SettingsDep) -> None:
    if (refusal := admin_refusal(request, settings)) is not None:
        raise refusal


AdminAuth = Depends(require_admin)


def get_weights(runtime: RuntimeDep) -> WeightFront:
    return runtime.weights


WeightsDep = Annotated[WeightFront, Depends(get_weights)]


def get_transfer(runtime: RuntimeDep) -> WeightTransfer:
    # Unreachable where app.py did not mount the transfer routes; a clear 409 rather than a
    # 500 should a route ever be mounted without a transfer behind it.
    if runtime.weights.transfer is None:
        raise TransferStateError("this deployment does not serve the weight transfer")
    return runtime.weights.transfer


TransferDep = Annotated[WeightTransfer, Depends(get_transfer)]


def incoming_body(request: Request) -> IncomingBody:
    """The raw body as the weight plane takes it: declared length and chunks, unread."""
    return IncomingBody(request.headers.get("content-length"), request.stream())


BodyDep = Annotated[IncomingBody, Depends(incoming_body)]
