"""Torch-free client for the vigor-reward service."""

from .client import AsyncVigorClient, VigorClient
from .errors import (
    AuthenticationError,
    DeadlineExceededError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    StaleWeightsError,
    VigorConnectionError,
    VigorError,
    VigorProtocolError,
    VigorServerError,
    VigorTimeoutError,
)
from .schema import Group, GroupResult, Message, ModelInfo, RewardsRequest, RewardsResponse

__all__ = [
    "AsyncVigorClient",
    "AuthenticationError",
    "DeadlineExceededError",
    "Group",
    "GroupResult",
    "InvalidRequestError",
    "Message",
    "ModelInfo",
    "NotFoundError",
    "NotReadyError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RewardsRequest",
    "RewardsResponse",
    "StaleWeightsError",
    "VigorClient",
    "VigorConnectionError",
    "VigorError",
    "VigorProtocolError",
    "VigorServerError",
    "VigorTimeoutError",
]
