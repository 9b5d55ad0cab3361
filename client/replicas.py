"""Several servers behind one client: data plane routed, control plane broadcast.

- `score` splits a request by group over the healthy replicas (a group is never split, the cost
  is spread evenly); a replica that cannot be reached, is not ready or is overloaded is rested and
  its groups go to another one. When every replica has failed so, the retry policy's backoff is
  waited and all are tried again, up to `max_retries` rounds.
- `reload_weights`, `push_weights`, `load_adapter`, `unload_adapter` go to every replica and
  succeed only when every replica then reports the same weight version; otherwise
  `WeightSyncError` names each replica that failed or disagrees.

`connect("http://a:8000,http://b:8000")` gives a `VigorReplicas` for several URLs and a plain
`VigorClient` for one.

Layout: the shared policy is `_replicas_base`, the twins `_sync_replicas` and `_async_replicas`,
the pure shard arithmetic `_routing`; this module is their public home.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._async_client import AsyncVigorClient
from ._async_replicas import AsyncVigorReplicas
from ._routing import split_urls
from ._sync_client import VigorClient
from ._sync_replicas import VigorReplicas
from .errors import WeightSyncError


def connect(base_urls: str | Sequence[str], **kwargs: Any) -> VigorClient | VigorReplicas:
    """One URL → `VigorClient`; several (a list, or comma-separated) → `VigorReplicas`."""
    urls = split_urls(base_urls if isinstance(base_urls, str) else list(base_urls))
    return VigorClient(urls[0], **kwargs) if len(urls) == 1 else VigorReplicas(urls, **kwargs)


def aconnect(
    base_urls: str | Sequence[str], **kwargs: Any
) -> AsyncVigorClient | AsyncVigorReplicas:
    urls = split_urls(base_urls if isinstance(base_urls, str) else list(base_urls))
    return (
        AsyncVigorClient(urls[0], **kwargs)
        if len(urls) == 1
        else AsyncVigorReplicas(urls, **kwargs)
    )


__all__ = [
    "AsyncVigorReplicas",
    "VigorReplicas",
    "WeightSyncError",
    "aconnect",
    "connect",
]
