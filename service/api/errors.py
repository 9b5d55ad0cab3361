"""Every error leaves as JSON {"error": {"code", "message"}}; domain errors map to status here."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vigor_client.schema import ErrorDetail, ErrorResponse
from vigor_client.wire import ErrorCode

from .. import errors as e
from ..engine.errors import UnsupportedModelError
from .body_errors import parse_failure, unsupported_encoding, wrong_content_type

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 4000  # messages quote input: a 20 MB path is not echoed back whole

# Every error class the service raises, by its nearest listed ancestor; its `code` is the class's.
STATUS: dict[type[e.VigorServiceError], int] = {
    e.VigorServiceError: 500,
    e.InvalidInputError: 422,
    e.NotReadyError: 503,
    e.ModelLoadError: 503,
    e.StaleWeightsError: 409,
    e.LimitExceededError: 413,
    e.OverloadedError: 429,
    e.DeadlineExceededError: 504,
    e.BodyTimeoutError: 408,
    e.ClientGoneError: 499,  # nginx's "client closed request": nobody reads it, /metrics counts it
    e.WeightsRejectedError: 422,
    e.PathNotAllowedError: 403,
    e.UploadNotFoundError: 404,
    e.NoAdapterError: 404,
    e.TransferStateError: 409,
    e.TransferFailedError: 502,
    UnsupportedModelError: 500,  # the operator's choice of engine, not the caller's input
}


def error_response(
    status: int, code: ErrorCode, message: str, headers: dict[str, str] | None = None, **extra
) -> JSONResponse:
    # A message may echo input that JSON cannot carry back (a lone surrogate): escape it.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(message) > MAX_MESSAGE_CHARS:
        cut = len(message) - MAX_MESSAGE_CHARS
        message = f"{message[:MAX_MESSAGE_CHARS]}… ({cut} more characters)"
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, **extra))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def format_loc(loc: tuple) -> str:
    """('body', 'groups', 0, 'completion_ids', 2) → 'groups[0].completion_ids[2]'."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after[", "function-before[", "function-wrap[")):
            continue  # a validator's own name, not a place in the body
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _validation_message(err: dict) -> str:
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "json_invalid":
        ctx = err.get("ctx", {}).get("error")
        return f"body is not valid JSON{': ' + ctx if ctx else ''}"
    return msg


HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.LIMIT_EXCEEDED,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}  # fmt: skip


def http_error_response(exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, ErrorCode.HTTP_ERROR)
    return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


def status_for(exc: e.VigorServiceError) -> int:
    return next(STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (why := unsupported_encoding(request)) is not None:
            return error_response(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, why)
        body_not_json = any(
            tuple(err.get("loc", ())) == ("body",) and err.get("type") == "model_attributes_type"
            for err in exc.errors()
        )
        if body_not_json and (why := wrong_content_type(request)) is not None:
            return error_response(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, why)
        problems = [
            e.InputProblem(format_loc(tuple(err.get("loc", ()))), _validation_message(err))
            for err in exc.errors()
        ]
        return error_response(422, e.InvalidInputError.code, str(e.InvalidInputError(problems)))

    @app.exception_handler(e.VigorServiceError)
    async def _domain(request: Request, exc: e.VigorServiceError) -> JSONResponse:
        status = status_for(exc)
        headers, extra = None, {}
        if isinstance(exc, e.OverloadedError):
            headers = {"Retry-After": f"{max(1, round(exc.retry_after))}"}
        if isinstance(exc, e.BodyTimeoutError):
            headers = {"Connection": "close"}  # the rest of the body is not wanted
        if isinstance(exc, e.StaleWeightsError):
            extra["current_weight_version"] = exc.current_version
        if status >= 500 and status != 503:
            log.error("%s on %s: %s", exc.code, request.url.path, exc.message)
        return error_response(status, exc.code, exc.message, headers, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            if (why := unsupported_encoding(request)) is not None:
                return error_response(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, why)
            return error_response(400, ErrorCode.INVALID_BODY, parse_failure(exc.__cause__))
        return http_error_response(exc)

    @app.exception_handler(Exception)
    async def _unknown(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        why = f"internal error ({type(exc).__name__}); see the server log"
        return error_response(500, ErrorCode.INTERNAL_ERROR, why)
