"""A loopback HTTP/1.1 proxy in front of a real server that misbehaves on a script.

Each request that arrives is matched against the scripted rules (`"POST /v1/rewards"`, or any
substring of "METHOD /path"); the first rule that still has actions left takes its next action:

    "pass"          forward to the server and relay its answer
    "drop"          close the connection without forwarding (the server never sees the request)
    "drop_answer"   forward, let the server act, then close without relaying its answer
    "delay:S"       wait S seconds, then forward
    "cut:S"         forward, then close both connections after S seconds (or when the answer
                    comes), relaying nothing: the network fails while the server holds the call
    "429:S", "503", "503:S", "502"   answer that status (with Retry-After: S when given) and
                    close; the server never sees the request

Requests matching no rule with actions left pass. `seen` lists (method, path, action) for every
request that arrived, in order; `forwarded` those the server received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from urllib.parse import urlsplit

from ..servers import free_port

REASONS = {429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable"}
CODES = {429: "overloaded", 502: "bad_gateway", 503: "not_ready"}


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 message (head, body) framed by Content-Length; None at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"transfer-encoding":
            raise ValueError("the flaky proxy only handles Content-Length framing")
    body = await reader.readexactly(length) if length else b""
    return head, body


class FlakyProxy:
    def __init__(self, upstream_url: str) -> None:
        up = urlsplit(upstream_url)
        self.upstream = (up.hostname, up.port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[tuple[str, str, str]] = []
        self.forwarded: list[tuple[str, str]] = []
        self._rules: list[tuple[str, deque[str]]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def script(self, match: str, actions: list[str]) -> FlakyProxy:
        with self._lock:
            self._rules.append((match, deque(actions)))
        return self

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self.seen.clear()
            self.forwarded.clear()

    def count(self, match: str, *, forwarded: bool = False) -> int:
        with self._lock:
            rows = self.forwarded if forwarded else [(m, p) for m, p, _ in self.seen]
            return sum(match in f"{m} {p}" for m, p in rows)

    def _action(self, method: str, path: str) -> str:
        with self._lock:
            action = "pass"
            for match, actions in self._rules:
                if match in f"{method} {path}" and actions:
                    action = actions.popleft()
                    break
            self.seen.append((method, path, action))
            return action

    async def _forward(self, upstream, head: bytes, body: bytes, method: str, path: str):
        if upstream[0] is None:
            upstream[:] = await asyncio.open_connection(*self.upstream)
        reader, writer = upstream
        writer.write(head + body)
        await writer.drain()
        with self._lock:
            self.forwarded.append((method, path))
        answer = await _read_message(reader)
        if answer is None:
            raise ConnectionError("the upstream server closed the connection")
        return answer

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: list = [None, None]
        try:
            while (message := await _read_message(reader)) is not None:
                head, body = message
                method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
                path = urlsplit(target).path
                action = self._action(method, path)
                kind, _, arg = action.partition(":")
                if kind == "drop":
                    return
                if kind == "cut":
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._forward(upstream, head, body, method, path), float(arg)
                        )
                    return
                if kind == "delay":
                    await asyncio.sleep(float(arg))
                    kind = "pass"
                if kind in ("pass", "drop_answer"):
                    answer = await self._forward(upstream, head, body, method, path)
                    if kind == "drop_answer":
                        return
                    writer.write(answer[0] + answer[1])
                    await writer.drain()
                    continue
                status = int(kind)
                error = {"code": CODES[status], "message": f"the flaky proxy answers {status}"}
                payload = json.dumps({"error": error}).encode()
                headers = [
                    f"HTTP/1.1 {status} {REASONS[status]}",
                    "content-type: application/json",
                    f"content-length: {len(payload)}",
                    "connection: close",
                ] + ([f"retry-after: {arg}"] if arg else [])
                writer.write("\r\n".join(headers).encode() + b"\r\n\r\n" + payload)
                await writer.drain()
                return
        finally:
            for w in (writer, upstream[1]):
                if w is not None:
                    w.close()

    def __enter__(self) -> FlakyProxy:
        self._thread.start()

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
