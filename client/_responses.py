"""What came back, turned into a wire model or the typed error it stands for; sends nothing.

An answer becomes its model (`parse_response`) or its `VigorServerError` (`error_for`, by the
code table in errors.py); a failure of httpx's transport becomes a `VigorConnectionError`.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from .errors import (
    VigorConnectionError,
    VigorProtocolError,
    VigorServerError,
    VigorTimeoutError,
    error_class,
)
from .wire import ErrorCode

T = TypeVar("T", bound=BaseModel)


def parse_response(response: httpx.Response, model: type[T]) -> T:
    """The success body as `model`; an error answer raises its typed error."""
    error = error_for(response)
    if error is not None:
        raise error
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise VigorProtocolError(
            f"{response.request.url} answered {response.status_code} with a body that is not a "
            f"{model.__name__}: {exc}"
        ) from exc


def error_for(response: httpx.Response) -> VigorServerError | None:
    """The typed error an answer stands for, or None for a success."""
    if response.status_code < 400:
        return None
    code, message, version = ErrorCode.HTTP_ERROR.value, response.text[:500], None
    try:
        detail = json.loads(response.content)["error"]
        code, message = detail["code"], detail["message"]
        version = detail.get("current_weight_version")
    except (ValueError, KeyError, TypeError):
        pass
    return error_class(response.status_code, code)(
        response.status_code,
        code,
        message,
        url=str(response.request.url),
        current_weight_version=version,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP-date (RFC 9110 §10.2.3);
    None when absent or unreadable (the caller then backs off on its own)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


# The connection was never made: the server cannot have seen the request.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures a repeat may get past: the network, or a peer that went away mid-exchange.
TRANSIENT = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


def translate_transport_error(exc: httpx.HTTPError, url: str) -> VigorConnectionError:
    """Map httpx's transport errors onto ours at the boundary; callers `raise ... from exc`."""
    facts = {
        "request_sent": not isinstance(exc, NOT_SENT),
        "transient": isinstance(exc, TRANSIENT),
    }
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return VigorTimeoutError(f"no answer from {url} in time ({what})", **facts)
    return VigorConnectionError(f"cannot reach {url} ({what})", **facts)
