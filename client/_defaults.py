"""What a client assumes when told nothing: the server's URL, how long to listen, which tokens."""

from __future__ import annotations

import os

import httpx

from .schema import RewardsRequest

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
# Admin calls: above the server's own bound (--admin-timeout-s, 300 s), which answers first.
DEFAULT_ADMIN_TIMEOUT = 330.0
# Read when a client is given no token, as the server reads its own (VIGOR_API_TOKEN,
# VIGOR_ADMIN_TOKEN): one environment, e.g. a compose file's, configures both ends.
API_TOKEN_ENV = "VIGOR_API_TOKEN"
ADMIN_TOKEN_ENV = "VIGOR_ADMIN_TOKEN"
# Added to the longest a server may take by its own bounds before the client stops listening.
DEFAULT_TIMEOUT_MARGIN_S = 10.0


# The server's default --group-hold-s: how long it may hold samples of an incomplete group.
SERVER_HOLD_S = 120.0


def held_wait(body: RewardsRequest) -> float:
    """How long the server may hold this request's samples before it answers (0: whole groups)."""
    holds = [
        g.hold_s or body.hold_s or SERVER_HOLD_S for g in body.groups if g.group_size is not None
    ]
    return max(holds, default=0.0)


def token_or_env(token: str | None, env: str) -> str | None:
    """`token` as given; None reads `env`. An empty string (given or in `env`) is no token."""
    if token is None:
        token = os.environ.get(env)
    return token or None
