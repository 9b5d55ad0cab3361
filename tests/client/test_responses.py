"""Answers turned into models or typed errors (`vigor_client._responses`), through a client on
httpx's MockTransport: each mapped status, an unmapped one, a body that is not ours, Retry-After."""

import email.utils
import time

import httpx
import pytest

from vigor_client import VigorClient, VigorProtocolError, VigorServerError
from vigor_client._responses import parse_retry_after
from vigor_client.errors import (
    ERRORS_BY_STATUS,
    CheckpointPendingError,
    DeadlineExceededError,
    GroupIncompleteError,
    StaleWeightsError,
    TransferStateError,
)


def _mock(handler):
    return httpx.MockTransport(handler)


def test_every_mapped_status_raises_its_class():
    for status, cls in ERRORS_BY_STATUS.items():
        body = {"error": {"code": f"c{status}", "message": "m", "current_weight_version": 3}}
        transport = _mock(
            lambda req, s=status, b=body: httpx.Response(s, json=b, headers={"Retry-After": "2"})
        )
        # No retries: the mapping is under test, not the patience (a 429 with Retry-After is
        # otherwise repeated for the policy's whole time budget).
        client = VigorClient("http://x", transport=transport, retry=None)
        with client, pytest.raises(cls) as info:
            client.model_info()
        assert info.value.status == status and info.value.code == f"c{status}"
        assert info.value.retry_after == 2.0 and info.value.current_weight_version == 3


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [(409, "transfer_state", TransferStateError), (409, "stale_weight_version", StaleWeightsError),
     (409, "version_conflict", StaleWeightsError), (504, "group_incomplete", GroupIncompleteError),
     (504, "checkpoint_pending", CheckpointPendingError),
     (504, "deadline_exceeded", DeadlineExceededError)],
)  # fmt: skip
def test_the_code_picks_the_class_where_a_status_has_several_meanings(status, code, cls):
    body = {"error": {"code": code, "message": "m"}}
    transport = _mock(lambda req: httpx.Response(status, json=body))
    with (
        VigorClient("http://x", transport=transport) as client,
        pytest.raises(VigorServerError) as info,
    ):
        client.model_info()
    assert type(info.value) is cls and info.value.code == code


def test_unmapped_status_and_non_json_error_body():
    transport = _mock(lambda req: httpx.Response(502, text="<html>bad gateway</html>"))
    with (
        VigorClient("http://x", transport=transport) as client,
        pytest.raises(VigorServerError) as info,
    ):
        client.model_info()
    assert type(info.value) is VigorServerError and "bad gateway" in info.value.message


def test_unexpected_success_body_is_a_protocol_error():
    transport = _mock(lambda req: httpx.Response(200, json={"hello": 1}))
    with VigorClient("http://x", transport=transport) as client, pytest.raises(VigorProtocolError):
        client.model_info()


def test_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("3") == 3.0 and parse_retry_after(" 1.5 ") == 1.5
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
