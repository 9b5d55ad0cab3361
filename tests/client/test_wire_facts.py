"""Wire facts written once: every error code the server sends is an `ErrorCode` that the client
maps to an exception class, the codes appear as literals nowhere else, the hold default is one
number, and the error tree drawn in `vigor_client.errors` is the real class tree."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import httpx
import pytest

import vigor_client
from vigor_client import VigorClient, VigorServerError
from vigor_client import errors as client_errors
from vigor_client._requests import RequestCore
from vigor_client.errors import ERRORS_BY_CODE, ERRORS_BY_STATUS, VigorError, error_class
from vigor_client.wire import GROUP_HOLD_S, ErrorCode
from vigor_service.api.errors import HTTP_CODES, STATUS
from vigor_service.scoring.assembler import HoldBounds
from vigor_service.settings import Settings

from ..api.test_error_table import EXPECTED, OUTSIDE_THE_APP, exception_classes
from ..weights.helpers import runtime_of, tiny_server

ROOT = Path(__file__).resolve().parents[2]


def _status(cls: type) -> int:
    return next(STATUS[c] for c in cls.__mro__ if c in STATUS)


def _codes_named_in_service() -> set[ErrorCode]:
    """Every `ErrorCode.X` the server's source names: what its HTTP layer answers by itself."""
    named = set()
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "ErrorCode"
            ):
                named.add(ErrorCode[node.attr])
    return named


def server_answers() -> set[tuple[int, ErrorCode]]:
    """(status, code) of every error the server can answer: its exception classes by the status
    table, and the codes its HTTP layer sends with the statuses it sends them with."""
    pairs = {(_status(cls), cls.code) for cls in exception_classes() - OUTSIDE_THE_APP}
    pairs |= {(status, code) for status, code in HTTP_CODES.items()}
    pairs |= {(400, ErrorCode.INVALID_BODY), (415, ErrorCode.UNSUPPORTED_MEDIA_TYPE)}
    pairs |= {(422, ErrorCode.INVALID_REQUEST), (500, ErrorCode.INTERNAL_ERROR)}
    return pairs


def test_every_code_the_server_sends_is_an_error_code_mapped_to_a_client_class():
    pairs = server_answers()
    sent = {code for _, code in pairs} | _codes_named_in_service()
    assert all(isinstance(code, ErrorCode) for code in sent), sent
    assert sent - {ErrorCode.HTTP_ERROR} == set(ERRORS_BY_CODE)
    assert set(ErrorCode) == set(ERRORS_BY_CODE) | {ErrorCode.HTTP_ERROR}
    # The class a code picks is the status's class or a narrower one, except where one status
    # carries another meaning: a 409 transfer_state is about call order, not a stale version.
    other_meaning = {
        code
        for status, code in pairs
        if not issubclass(error_class(status, code), ERRORS_BY_STATUS.get(status, VigorServerError))
    }
    assert other_meaning == {ErrorCode.TRANSFER_STATE}


def test_a_code_that_is_not_ours_falls_back_to_the_status():
    assert error_class(404, "http_error") is ERRORS_BY_STATUS[404]
    assert error_class(418, "teapot") is VigorServerError
    assert error_class(409, "transfer_state") is client_errors.TransferStateError


def test_each_server_error_raised_while_scoring_raises_its_client_class():
    with tiny_server() as srv, VigorClient(srv.url, retry=None) as client:
        pipeline = runtime_of(srv).pipeline
        for cls, (status, code, make) in EXPECTED.items():
            exc = make(cls)

            async def fail(request, gone=None, caller=None, exc=exc):
                raise exc

            pipeline.score = fail
            with pytest.raises(VigorServerError) as info:
                client.score([{"prompt_ids": [1, 2], "completion_ids": [[3, 4]]}])
            assert type(info.value) is ERRORS_BY_CODE[ErrorCode(code)], cls
            assert (info.value.status, info.value.code) == (status, code)


def test_no_error_code_is_written_as_a_string_outside_wire():
    # /ready answers {"status": "not_ready"}: a readiness state, not an error envelope's code.
    allowed = {("service/api/routes/health.py", "not_ready")}
    values = {c.value for c in ErrorCode}
    found = set()
    for folder in ("service", "client"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            if rel == "client/wire.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in values:
                    found.add((rel, node.value))
    assert found == allowed


def test_the_hold_default_is_one_number():
    assert Settings.model_fields["group_hold_s"].default == GROUP_HOLD_S
    assert HoldBounds().hold_s == GROUP_HOLD_S  # the pipeline's assembler default
    held = RequestCore("http://x").rewards(
        [{"id": "g", "group_size": 2, "prompt_ids": [1], "completion_ids": [[2]]}]
    )
    assert held.timeout == pytest.approx(GROUP_HOLD_S + 120.0 + 10.0)


def _drawn_tree() -> set[tuple[str, str, str | None]]:
    """(module, class, parent class) for each class drawn at the top of vigor_client.errors; a
    class from another module names it in parentheses after its own name."""
    lines = client_errors.__doc__.split("\n\n")[1].splitlines()
    drawn, stack = set(), []
    for line in lines:
        match = re.match(r"^([│ ]*(?:[├└]── )?)(\w+)(?:\s+\(([\w.]+)\))?", line)
        if not match or (stack and not re.search("[├└]── ", match.group(1))):
            continue  # a description carried onto the next line
        depth = len(match.group(1)) // 4
        module = f"vigor_client.{match.group(3) or 'errors'}"
        del stack[depth:]
        parent = stack[-1][1] if stack else None
        drawn.add((module, match.group(2), parent))
        stack.append((module, match.group(2)))
    return drawn


def _real_tree() -> set[tuple[str, str, str | None]]:
    real = set()
    for info in pkgutil.walk_packages(vigor_client.__path__, "vigor_client."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, VigorError) and cls.__module__ == info.name:
                parent = cls.__bases__[0]
                real.add((info.name, cls.__name__, None if cls is VigorError else parent.__name__))
    return real


def test_the_drawn_error_tree_is_the_class_tree():
    drawn = _drawn_tree()
    assert ("vigor_client.errors", "GroupIncompleteError", "DeadlineExceededError") in drawn
    assert drawn == _real_tree()


def test_every_server_class_the_client_raises_is_drawn():
    drawn = {name for module, name, _ in _drawn_tree() if module == "vigor_client.errors"}
    assert {cls.__name__ for cls in ERRORS_BY_CODE.values()} <= drawn


def test_an_unreadable_error_body_is_http_error_by_status():
    transport = httpx.MockTransport(lambda req: httpx.Response(403, text="nope"))
    with VigorClient("http://x", transport=transport) as client, pytest.raises(VigorError) as info:
        client.model_info()
    assert type(info.value) is client_errors.PermissionDeniedError
    assert info.value.code == ErrorCode.HTTP_ERROR
