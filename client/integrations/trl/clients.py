"""The client a TRL piece talks through: a URL (or several) becomes one, a client is used as is.

`options` (retry, timeout, timeout_margin_s, api_token, admin_token, cooldown_s, ...) go to the
client built from a URL; a client passed in keeps its own. An async reward given a sync client
gets its async twin, built with the same tokens, timeouts and retry policy.
"""

from __future__ import annotations

from typing import Any

from ...client import AsyncVigorClient, VigorClient
from ...replicas import AsyncVigorReplicas, VigorReplicas, aconnect, connect


def _no_options_for_a_client(server: Any, options: dict) -> None:
    if options:
        raise ValueError(
            f"client_options ({', '.join(sorted(options))}) configure a client built from a URL; "
            f"set them on the {type(server).__name__} passed as server instead"
        )


def sync_client(server: Any, **options: Any) -> VigorClient | VigorReplicas:
    if isinstance(server, VigorClient | VigorReplicas):
        _no_options_for_a_client(server, options)
        return server
    return connect(server, **options)


def async_client(server: Any, **options: Any) -> AsyncVigorClient | AsyncVigorReplicas:
    if isinstance(server, AsyncVigorClient | AsyncVigorReplicas):
        _no_options_for_a_client(server, options)
        return server
    if isinstance(server, VigorReplicas):
        _no_options_for_a_client(server, options)
        return AsyncVigorReplicas(server.urls, **server.options())
    if isinstance(server, VigorClient):
        _no_options_for_a_client(server, options)
        return AsyncVigorClient(server.base_url, **server.options())
    return aconnect(server, **options)
