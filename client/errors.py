"""Exceptions raised by the client.

VigorError
├── VigorConnectionError        the server could not be reached or the transport failed
│   └── VigorTimeoutError       no answer within the client's timeout
├── VigorProtocolError          an answer not in our wire format, or not answering the request
├── VigorServerError            the server answered an error: .status, .code, .message
│   ├── InvalidRequestError     400 / 422 — the message names the group, completion, field
│   ├── AuthenticationError     401 — no token sent
│   ├── PermissionDeniedError   403 — wrong token, or a path outside the allowed dirs
│   ├── NotFoundError           404
│   ├── BodyTimeoutError        408 body_timeout — the server stopped waiting for the body
│   ├── StaleWeightsError       409 — .current_weight_version says what is served
│   ├── TransferStateError      409 transfer_state — a transfer call out of order
│   ├── PayloadTooLargeError    413
│   ├── OverloadedError         429 — .retry_after seconds
│   ├── NotReadyError           503
│   └── DeadlineExceededError   504
│       ├── GroupIncompleteError  504 group_incomplete — a held group never became whole
│       └── CheckpointPendingError  504 checkpoint_pending — the watcher's newer step not loaded
├── WeightSyncError             a broadcast weight change left replicas on different versions
├── TransferError               (distributed.control) a transfer step failed on some servers
└── GroupIncompleteError        (integrations.trl.results) a group spanning processes never
                                completed: the TRL reward function refuses to guess its ranks

Every error a call raises carries `.attempts` (how many times the request was sent; 1 when it was
not retried) and `.history` (the error of each earlier attempt, oldest first); when there were
retries, the message ends with them. A `VigorConnectionError` says in `.request_sent` whether the
request may have reached the server (False: the connection was never made).
"""

from __future__ import annotations

from .wire import ErrorCode


class VigorError(Exception):
    """Base of every error this client raises."""

    attempts: int = 1
    history: tuple[VigorError, ...] = ()

    @property
    def retries(self) -> int:
        return self.attempts - 1

    def record_attempts(self, history: list[VigorError], seconds: float, why: str = "") -> None:
        """Mark this as the last of `len(history) + 1` attempts; name them in the message."""
        self.attempts = len(history) + 1
        self.history = tuple(history)
        notes = []
        if history:
            earlier = ", ".join(_brief(e) for e in history)
            notes.append(f"after {self.attempts} attempts in {seconds:.1f} s; earlier: {earlier}")
        if why:
            notes.append(why)
        if notes and self.args:
            self.args = (f"{self.args[0]} [{'; '.join(notes)}]", *self.args[1:])


def _brief(error: VigorError) -> str:
    if isinstance(error, VigorServerError):
        return f"{error.status} {error.code}"
    return type(error).__name__


class VigorConnectionError(VigorError):
    def __init__(self, message: str, *, request_sent: bool = True, transient: bool = True):
        super().__init__(message)
        self.request_sent = request_sent  # False: the connection was never made
        self.transient = transient  # False: repeating cannot help (bad URL, protocol misuse)


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


class TransferStateError(VigorServerError):
    """409 `transfer_state`: a weight-transfer call out of order (no group, no update open),
    not a stale weight version."""


class GroupIncompleteError(DeadlineExceededError):
    """504 `group_incomplete`: a held group did not get all its samples within its hold time."""


class CheckpointPendingError(DeadlineExceededError):
    """504 `checkpoint_pending`: the server's checkpoint watcher saw a newer step directory and
    did not load it within --watch-wait-s (still being written, or stalled)."""


class BodyTimeoutError(VigorServerError):
    """408 `body_timeout`: the server stopped waiting for the rest of the request body."""


class WeightSyncError(VigorError):
    """A broadcast weight change did not leave every replica on one version.

    `failures` maps a replica URL to the exception it raised; `versions` maps every replica that
    answered to the weight version it reports now.
    """

    def __init__(self, action: str, failures: dict[str, BaseException], versions: dict[str, int]):
        parts = [f"{url}: {type(e).__name__}: {e}" for url, e in failures.items()]
        if not failures:
            parts = [f"{url} is at version {v}" for url, v in versions.items()]
        super().__init__(
            f"{action} did not reach one weight version on every replica: " + "; ".join(parts)
        )
        self.action = action
        self.failures = failures
        self.versions = versions


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

# Every code the server sends, and the class it raises. A status alone picks the class when the
# code is not ours (a proxy's answer, or `http_error`); where one status carries several meanings
# (409, 504), the code picks.
ERRORS_BY_CODE: dict[ErrorCode, type[VigorServerError]] = {
    ErrorCode.INTERNAL_ERROR: VigorServerError,
    ErrorCode.UNSUPPORTED_MODEL: VigorServerError,
    ErrorCode.INVALID_REQUEST: InvalidRequestError,
    ErrorCode.WEIGHTS_REJECTED: InvalidRequestError,
    ErrorCode.NOT_READY: NotReadyError,
    ErrorCode.MODEL_LOAD_FAILED: NotReadyError,
    ErrorCode.STALE_WEIGHT_VERSION: StaleWeightsError,
    ErrorCode.VERSION_CONFLICT: StaleWeightsError,
    ErrorCode.TRANSFER_STATE: TransferStateError,
    ErrorCode.LIMIT_EXCEEDED: PayloadTooLargeError,
    ErrorCode.OVERLOADED: OverloadedError,
    ErrorCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    ErrorCode.GROUP_INCOMPLETE: GroupIncompleteError,
    ErrorCode.CHECKPOINT_PENDING: CheckpointPendingError,
    ErrorCode.BODY_TIMEOUT: BodyTimeoutError,
    ErrorCode.CLIENT_DISCONNECTED: VigorServerError,
    ErrorCode.PATH_NOT_ALLOWED: PermissionDeniedError,
    ErrorCode.UPLOAD_NOT_FOUND: NotFoundError,
    ErrorCode.NO_ADAPTER: NotFoundError,
    ErrorCode.TRANSFER_FAILED: VigorServerError,
    ErrorCode.INVALID_BODY: InvalidRequestError,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: VigorServerError,
    ErrorCode.BAD_REQUEST: InvalidRequestError,
    ErrorCode.UNAUTHORIZED: AuthenticationError,
    ErrorCode.FORBIDDEN: PermissionDeniedError,
    ErrorCode.NOT_FOUND: NotFoundError,
    ErrorCode.METHOD_NOT_ALLOWED: VigorServerError,
}


def error_class(status: int, code: str) -> type[VigorServerError]:
    """The class an error answer raises: by its code when the code is ours, else by status."""
    if code in ERRORS_BY_CODE:
        return ERRORS_BY_CODE[ErrorCode(code)]
    return ERRORS_BY_STATUS.get(status, VigorServerError)
