"""VigorClient and AsyncVigorClient against the same real server as the API tests."""

import asyncio

import httpx
import pytest

from vigor_client import (
    AsyncVigorClient,
    Group,
    InvalidRequestError,
    NotFoundError,
    VigorClient,
    VigorConnectionError,
    VigorTimeoutError,
)

from ..servers import free_port

GROUPS = [
    {"id": "a", "prompt": "2+2=", "completions": ["4", "5", "22"]},
    Group(prompt_ids=[1, 2, 3], completion_ids=[[4, 5], [6]]),
]


@pytest.mark.slow
def test_sync_client_scores_and_reports(served_default):
    with VigorClient(served_default.url, timeout=120) as client:
        info = client.wait_until_ready(timeout=30)
        assert info.model == "SmolLM2-135M-Instruct"
        res = client.score(GROUPS, signals=["entropy_mean"])
        assert [g.id for g in res.groups] == ["a", None]
        assert sorted(res.groups[0].rewards) == [-1.0, 0.0, 1.0]
        assert len(res.groups[0].signals["entropy_mean"]) == 3
        raw = client.score(GROUPS, shaping="none")
        assert raw.groups[1].rewards == raw.groups[1].scores


@pytest.mark.slow
def test_sync_client_raises_typed_server_errors(served_default):
    with VigorClient(served_default.url) as client:
        with pytest.raises(InvalidRequestError) as info:
            client.score([{"prompt": "x", "completion_ids": [[10**9]]}])
        err = info.value
        assert err.status == 422 and err.code == "invalid_request"
        assert "groups[0].completion_ids[0][0]" in err.message


@pytest.mark.slow
def test_async_client_matches_sync(served_default):
    async def run():
        async with AsyncVigorClient(served_default.url, timeout=120) as client:
            await client.wait_until_ready(timeout=30)
            return await asyncio.gather(client.score(GROUPS), client.model_info())

    res, info = asyncio.run(run())
    with VigorClient(served_default.url) as client:
        again = client.score(GROUPS)
    assert res.groups[0].scores == pytest.approx(again.groups[0].scores, rel=1e-9)
    assert info.weight_version == res.weight_version == 0


def test_client_validates_groups_before_sending():
    with (
        VigorClient("http://127.0.0.1:9") as client,
        pytest.raises(ValueError, match="exactly one"),
    ):
        client.score([{"prompt": "x", "messages": [], "completions": ["y"]}])


def test_unreachable_server_is_a_connection_error():
    with VigorClient(f"http://127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(VigorConnectionError, match="cannot reach"):
            client.model_info()
        assert client.ready() is False
        with pytest.raises(VigorTimeoutError):
            client.wait_until_ready(timeout=0.3, poll=0.1)


def _mock(handler):
    return httpx.MockTransport(handler)


def test_timeouts_map_to_timeout_error():
    def slow(req):
        raise httpx.ReadTimeout("slow", request=req)

    with VigorClient("http://x", transport=_mock(slow)) as client, pytest.raises(VigorTimeoutError):
        client.model_info()


def test_tokens_are_sent_as_bearer_headers():
    seen = {}

    def handler(req):
        seen["auth"] = req.headers.get("authorization")
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "x"}})

    client = VigorClient("http://x", api_token="s3cret", transport=_mock(handler))
    with client, pytest.raises(NotFoundError):
        client.model_info()
    assert seen["auth"] == "Bearer s3cret"


def test_client_package_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import vigor_client; print(vigor_client.VigorClient.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "VigorClient"
