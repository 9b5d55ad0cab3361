"""Exceptions raised by the client.

VigorError
├── VigorConnectionError        the server could not be reached or the transport failed
│   └── VigorTimeoutError       no answer within the client's timeout
├── VigorProtocolError          the server answered something that is not our wire format
└── VigorServerError            the server answered an error: .status, .code, .message
    ├── InvalidRequestError     400 / 422 — the message names the group, completion, field
    ├── AuthenticationError     401 — no token sent
    ├── PermissionDeniedError   403 — wrong token, or a path outside the allowed dirs
    ├── NotFoundError           404
    ├── StaleWeightsError       409 — .current_weight_version says what is served
    ├── PayloadTooLargeError    413
    ├── OverloadedError         429 — .retry_after seconds
    ├── NotReadyError           503
    └── DeadlineExceededError   504
"""

from __future__ import annotations


class VigorError(Exception):
    """Base of every error this client raises."""


class VigorConnectionError(VigorError):
    pass


class VigorTimeoutError(VigorConnectionError):
    pass


class VigorProtocolError(VigorError):
    pass


class VigorServerError(VigorError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        url: str | None = None,
        current_weight_version: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        where = f" from {url}" if url else ""
        super().__init__(f"{status} {code}{where}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.url = url
        self.current_weight_version = current_weight_version
        self.retry_after = retry_after


class InvalidRequestError(VigorServerError):
    pass


class AuthenticationError(VigorServerError):
    pass


class PermissionDeniedError(VigorServerError):
    pass


class NotFoundError(VigorServerError):
    pass


class StaleWeightsError(VigorServerError):
    pass


class PayloadTooLargeError(VigorServerError):
    pass


class OverloadedError(VigorServerError):
    pass


class NotReadyError(VigorServerError):
    pass


class DeadlineExceededError(VigorServerError):
    pass


ERRORS_BY_STATUS: dict[int, type[VigorServerError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: StaleWeightsError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
    429: OverloadedError,
    503: NotReadyError,
    504: DeadlineExceededError,
}
