"""--header-timeout-s on Ray Serve's HTTP proxy, which runs in an actor of its own.

Ray 2.60's proxy builds its uvicorn server itself and passes no protocol class, and none of its
HTTP options bounds the time to send request headers (`keep_alive_timeout_s` starts only after a
first response; `request_timeout_s` only once a request was routed). Its one hook into that
process is RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH: a function called in the proxy before its
server starts. `install` is that function: it points uvicorn's "auto" protocol in that process at
the plain server's HeaderTimeoutProtocol, the same code the plain server runs.

`launch` passes both variables to the Serve controller (`controller_options.runtime_env`); the
proxy it creates inherits them. A Serve already running in the cluster keeps its proxy as it is.
"""

from __future__ import annotations

import logging
import os

from ..http_protocol import HeaderTimeoutProtocol, with_header_timeout

log = logging.getLogger(__name__)

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"  # Ray Serve's own variable
TIMEOUT_ENV = "VIGOR_HEADER_TIMEOUT_S"
CALLBACK = f"{__name__}:install"

# The class uvicorn imports by name once `install` ran (uvicorn resolves protocols from strings).
Protocol: type[HeaderTimeoutProtocol] = HeaderTimeoutProtocol


def proxy_env(header_timeout_s: float) -> dict[str, str]:
    """The controller's env_vars that make its proxy bound header time."""
    return {CALLBACK_ENV: CALLBACK, TIMEOUT_ENV: repr(float(header_timeout_s))}


def install() -> list:
    """Called by Ray in the proxy process; returns no middlewares (Ray asks for a list)."""
    global Protocol
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        seconds = float(raw) if raw is not None else HeaderTimeoutProtocol.header_timeout_s
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    from uvicorn.config import HTTP_PROTOCOLS

    Protocol = with_header_timeout(seconds)
    HTTP_PROTOCOLS["auto"] = f"{__name__}:Protocol"
    log.info("Ray Serve proxy: request headers must arrive within %g s", seconds)
    return []
