"""`VigorClient` (blocking) and `AsyncVigorClient`: the same calls over one RequestCore.

The public home of both clients. Each lives in its own module (`_sync_client`, `_async_client`)
over what they share (`_client_base`); the requests themselves are built by `_core.RequestCore`.
"""

from ._async_client import AsyncVigorClient
from ._client_base import GroupLike as GroupLike  # re-exported: replicas and callers type with it
from ._sync_client import VigorClient
from .errors import VigorServerError

__all__ = ["AsyncVigorClient", "VigorClient", "VigorServerError"]
