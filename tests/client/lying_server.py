"""A real HTTP server on loopback that answers /v1/rewards with whatever it is told to.

It stands in for a broken or hostile peer: the client under test sends it real requests over
HTTP and reads its real answers; only the answer's content is scripted. `answer(body)` gets the
request's JSON and returns the answer to send back: a dict, written with NaN and Infinity as
Python's json writes them, or a string sent as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..servers import ThreadServer


def honest(body: dict[str, Any], version: int = 3) -> dict[str, Any]:
    """What a correct server could answer: rank rewards, scores ≤ 0, signals where asked."""
    groups = []
    for g in body["groups"]:
        n = len(g.get("completion_ids") or g.get("completions"))
        scores = [-float(k + 1) for k in range(n)]
        rewards = [1.0 - 2.0 * k / max(n - 1, 1) for k in range(n)]
        groups.append(
            {
                "id": g.get("id"),
                "rewards": rewards if body.get("shaping", "rank") == "rank" else scores,
                "scores": scores,
                "grad_norms": [1.0] * n,
                "num_tokens": [2] * n,
                "reasons": [None] * n,
                "signals": {s: [0.5] * n for s in body.get("signals", [])} or None,
            }
        )
    return {"model": "m", "weight_version": version, "groups": groups}


class LyingServer(ThreadServer):
    def __init__(self) -> None:
        self.answer: Callable[[dict], Any] = honest
        self.bodies: list[dict] = []

        async def rewards(request: Request) -> Response:
            body = json.loads(await request.body())
            self.bodies.append(body)
            out = self.answer(body)
            text = out if isinstance(out, str) else json.dumps(out)  # NaN goes out as NaN
            return Response(text, media_type="application/json")

        async def ready(request: Request) -> Response:
            return JSONResponse({"status": "ready"})

        app = Starlette(
            routes=[Route("/v1/rewards", rewards, methods=["POST"]), Route("/ready", ready)]
        )
        super().__init__(app)
