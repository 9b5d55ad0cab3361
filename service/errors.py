"""Domain errors. The HTTP layer maps each to a status code in one place (api/errors.py)."""

from __future__ import annotations

from dataclasses import dataclass

from vigor_client.wire import ErrorCode


class VigorServiceError(Exception):
    """Base class; `code` is the stable machine-readable error code sent to clients."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR  # every code is one the client maps (wire.py)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        # Subclasses take other constructor arguments than `args` holds, so a pickled error is
        # rebuilt from its fields: Ray replicas hand errors to the ingress this way.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[VigorServiceError], args: tuple, state: dict) -> VigorServiceError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


@dataclass(frozen=True)
class InputProblem:
    """One thing wrong with a request: where (a path like groups[0].completion_ids[2]) and what."""

    loc: str
    message: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}" if self.loc else self.message


class InvalidInputError(VigorServiceError):
    code = ErrorCode.INVALID_REQUEST

    def __init__(self, problems: list[InputProblem]) -> None:
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(shown + more)


class NotReadyError(VigorServiceError):
    code = ErrorCode.NOT_READY


class ModelLoadError(VigorServiceError):
    code = ErrorCode.MODEL_LOAD_FAILED


class StaleWeightsError(VigorServiceError):
    code = ErrorCode.STALE_WEIGHT_VERSION

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


class LimitExceededError(VigorServiceError):
    """A request over a configured size limit (413)."""

    code = ErrorCode.LIMIT_EXCEEDED


class OverloadedError(VigorServiceError):
    code = ErrorCode.OVERLOADED

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceededError(VigorServiceError):
    code = ErrorCode.DEADLINE_EXCEEDED


class BodyTimeoutError(VigorServiceError):
    """The client stopped sending its request body (408): the connection is not held open."""

    code = ErrorCode.BODY_TIMEOUT


class ClientGoneError(VigorServiceError):
    """The client disconnected before its work started; nothing was computed (499, unsent)."""

    code = ErrorCode.CLIENT_DISCONNECTED


class GroupIncompleteError(DeadlineExceededError):
    """Held samples whose group did not complete within its hold time (504, on /get_reward)."""

    code = ErrorCode.GROUP_INCOMPLETE


class WeightsRejectedError(VigorServiceError):
    """A checkpoint, push or adapter that cannot be applied (422); the message names the tensor."""

    code = ErrorCode.WEIGHTS_REJECTED

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(shown + more + "; the served weights are unchanged")


class VersionConflictError(StaleWeightsError):
    """A weight version that is not above the served one (409)."""

    code = ErrorCode.VERSION_CONFLICT


class PathNotAllowedError(VigorServiceError):
    """A reload path outside the operator's --allowed-weights-dir directories (403)."""

    code = ErrorCode.PATH_NOT_ALLOWED


class UploadNotFoundError(VigorServiceError):
    """A push upload id that does not exist: never created, aborted, committed or expired (404)."""

    code = ErrorCode.UPLOAD_NOT_FOUND


class NoAdapterError(VigorServiceError):
    """Unloading an adapter when none is loaded (404)."""

    code = ErrorCode.NO_ADAPTER


class TransferStateError(VigorServiceError):
    """A weight-transfer call out of order: no group joined, no update started, one busy (409)."""

    code = ErrorCode.TRANSFER_STATE


class TransferFailedError(VigorServiceError):
    """The trainer's process group failed: a peer died, went silent or never joined (502).

    The update is dropped and the group closed; the served weights are unchanged.
    """

    code = ErrorCode.TRANSFER_FAILED


class CheckpointPendingError(DeadlineExceededError):
    """A newer step directory in --watch-dir was not loaded within --watch-wait-s (504)."""

    code = ErrorCode.CHECKPOINT_PENDING
