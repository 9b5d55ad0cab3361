"""The hook Ray Serve's proxy calls (proxy_hook.install), in this process: what it makes uvicorn
load, and a clear error for a bad value. The proxy itself is tested on a real local Ray in
test_ray_serve.py (test_the_proxy_closes_connections_that_never_finish_their_headers)."""

from __future__ import annotations

import pytest
import uvicorn
from uvicorn.config import HTTP_PROTOCOLS

from vigor_service.http_protocol import HeaderTimeoutProtocol
from vigor_service.rayserve import proxy_hook


@pytest.fixture
def protocols(monkeypatch):
    """uvicorn's table as it was, restored after the test (install changes it in place)."""
    monkeypatch.setitem(HTTP_PROTOCOLS, "auto", HTTP_PROTOCOLS["auto"])
    monkeypatch.setattr(proxy_hook, "Protocol", proxy_hook.Protocol)
    return monkeypatch


def test_install_makes_uvicorn_load_the_header_timeout_protocol(protocols):
    env = proxy_hook.proxy_env(3.5)
    assert env[proxy_hook.CALLBACK_ENV] == "vigor_service.rayserve.proxy_hook:install"
    for key, value in env.items():
        protocols.setenv(key, value)
    assert proxy_hook.install() == []  # no middlewares
    config = uvicorn.Config(lambda scope, receive, send: None, log_config=None)  # http="auto"
    config.load()
    assert issubclass(config.http_protocol_class, HeaderTimeoutProtocol)
    assert config.http_protocol_class.header_timeout_s == 3.5


@pytest.mark.parametrize("value", ["ten", "0", "-1", "nan"])
def test_a_bad_timeout_is_refused_naming_the_variable(protocols, value):
    before = HTTP_PROTOCOLS["auto"]
    protocols.setenv(proxy_hook.TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=f"VIGOR_HEADER_TIMEOUT_S={value!r}"):
        proxy_hook.install()
    assert HTTP_PROTOCOLS["auto"] == before  # nothing changed
