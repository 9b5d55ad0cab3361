"""The client a TRL piece talks through: a URL (or several) becomes one, a client is used as is."""

from __future__ import annotations

from typing import Any

from ...client import AsyncVigorClient, VigorClient
from ...replicas import AsyncVigorReplicas, VigorReplicas, aconnect, connect


def sync_client(server: Any) -> VigorClient | VigorReplicas:
    return server if isinstance(server, VigorClient | VigorReplicas) else connect(server)


def async_client(server: Any) -> AsyncVigorClient | AsyncVigorReplicas:
    if isinstance(server, AsyncVigorClient | AsyncVigorReplicas):
        return server
    if isinstance(server, VigorReplicas):
        return aconnect(server.urls)
    if isinstance(server, VigorClient):
        return aconnect(server.base_url)
    return aconnect(server)
