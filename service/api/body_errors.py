"""Why a request body could not be read, in words: FastAPI says only "error parsing the body"."""

from __future__ import annotations

from fastapi import Request

GZIP_MAGIC = b"\x1f\x8b"


def parse_failure(cause: BaseException | None) -> str:
    """The message for a body json.loads refused with something other than a JSON syntax error."""
    if isinstance(cause, UnicodeDecodeError):
        hint = " (a gzip body? send it uncompressed)" if cause.object[:2] == GZIP_MAGIC else ""
        return (
            f"body is not valid UTF-8: byte 0x{cause.object[cause.start]:02x} at offset "
            f"{cause.start}{hint}"
        )
    if isinstance(cause, RecursionError):
        return "body nests JSON arrays or objects too deeply to parse"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return f"body holds an integer too long to parse ({cause})"
    return f"body could not be parsed as JSON ({type(cause).__name__})"


def wrong_content_type(request: Request) -> str | None:
    """Set when a JSON route got a body it did not parse because of its Content-Type."""
    kind = request.headers.get("content-type")
    base = (kind or "").split(";")[0].strip().lower()
    if base == "application/json" or base.endswith("+json"):
        return None
    got = f"Content-Type {kind!r}" if kind else "no Content-Type"
    return f"send the body as JSON with Content-Type: application/json (got {got})"


def unsupported_encoding(request: Request) -> str | None:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    return f"Content-Encoding {encoding!r} is not supported; send the body uncompressed"
