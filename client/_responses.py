"""An answer turned into a wire model or the typed error it stands for; sends nothing."""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from .errors import ERRORS_BY_CODE, ERRORS_BY_STATUS, VigorProtocolError, VigorServerError

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
    code, message, version = "http_error", response.text[:500], None
    try:
        detail = json.loads(response.content)["error"]
        code, message = detail["code"], detail["message"]
        version = detail.get("current_weight_version")
    except (ValueError, KeyError, TypeError):
        pass
    cls = ERRORS_BY_CODE.get(code) or ERRORS_BY_STATUS.get(response.status_code, VigorServerError)
    return cls(
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
